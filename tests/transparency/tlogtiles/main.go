// Command tlogtiles reads a deskbridge audit log through its C2SP tlog-tiles paths only, with Go's
// checksum-database tile reader (golang.org/x/mod/sumdb/tlog), as any tlog-tiles client would: it
// verifies the checkpoint with the log's vkey, every tile it reads against that checkpoint's root, and
// every entry of the entry bundles against its inclusion proof. It prints, as JSON, the root, every
// inclusion proof and the consistency proofs from the sizes given, for the test to compare with the
// audit API's own proofs.
//
// Usage: tlogtiles <prefix URL> <credential> <vkey> [old size ...]
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type client struct{ prefix, credential string }

func (c client) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", c.prefix+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.credential)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// tlog names tiles tile/<H>/<L>/<N> (data tiles: L = data); C2SP tlog-tiles drops the height, which is 8,
// and names data tiles "entries".
func c2spPath(t tlog.Tile) string {
	path := strings.TrimPrefix(t.Path(), "tile/8/")
	return "tile/" + strings.Replace(path, "data/", "entries/", 1)
}

type tiles struct{ client }

func (tiles) Height() int { return 8 }

func (r tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		data, err := r.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func hexes(proof []tlog.Hash) []string {
	out := make([]string, len(proof))
	for i, h := range proof {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: tlogtiles <prefix URL> <credential> <vkey> [old size ...]")
	}
	c := client{strings.TrimSuffix(args[0], "/"), args[1]}
	verifier, err := note.NewVerifier(args[2])
	if err != nil {
		return err
	}
	msg, err := c.get("checkpoint")
	if err != nil {
		return err
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return fmt.Errorf("checkpoint: not a checkpoint of %s", verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return err
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		return fmt.Errorf("checkpoint: bad root hash")
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	// The reader checks every tile it reads against the tree's root before handing out a hash.
	reader := tlog.TileHashReader(tree, tiles{c})
	if got, err := tlog.TreeHash(size, reader); err != nil || got != root {
		return fmt.Errorf("tree hash from the tiles: %v %v", got, err)
	}

	inclusion := map[string][]string{}
	for start := int64(0); start < size; start += 256 {
		t := tlog.Tile{H: 8, L: -1, N: start / 256, W: int(min(256, size-start))}
		bundle, err := c.get(c2spPath(t))
		if err != nil {
			return err
		}
		for i := start; i < start+int64(t.W); i++ {
			if len(bundle) < 2 {
				return fmt.Errorf("entry bundle %d: ends before entry %d", t.N, i)
			}
			length := int(bundle[0])<<8 | int(bundle[1])
			if len(bundle) < 2+length {
				return fmt.Errorf("entry bundle %d: entry %d is cut", t.N, i)
			}
			leaf := tlog.RecordHash(bundle[2 : 2+length])
			bundle = bundle[2+length:]
			proof, err := tlog.ProveRecord(size, i, reader)
			if err != nil {
				return err
			}
			if err := tlog.CheckRecord(proof, size, root, i, leaf); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			inclusion[strconv.FormatInt(i, 10)] = hexes(proof)
		}
		if len(bundle) != 0 {
			return fmt.Errorf("entry bundle %d: %d bytes after its entries", t.N, len(bundle))
		}
	}

	consistency := map[string][]string{}
	for _, arg := range args[3:] {
		old, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return err
		}
		oldRoot, err := tlog.TreeHash(old, reader)
		if err != nil {
			return err
		}
		proof, err := tlog.ProveTree(size, old, reader)
		if err != nil {
			return err
		}
		if err := tlog.CheckTree(proof, size, root, old, oldRoot); err != nil {
			return fmt.Errorf("consistency from %d: %w", old, err)
		}
		consistency[arg] = hexes(proof)
	}
	out := map[string]any{
		"size": size, "root": hex.EncodeToString(root[:]), "inclusion": inclusion, "consistency": consistency,
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(out); err != nil {
		return err
	}
	_, err = os.Stdout.Write(buf.Bytes())
	return err
}
