package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

/**
 * The signed directory (docs/trust.md): every agency and its public keys, a compact JWS (typ
 * deskbridge-directory+jws) by the desk's directory key, which each partner pins out of band. Only a
 * document that verifies against the pin and is recent is used; the server that hands it out is not trusted.
 */
public final class Directory {
    public static final String TYP = "deskbridge-directory+jws";
    public static final String PIN_FILE = "directory.pin.jwk.json";
    public static final String SIGNER = "deskbridge-directory";
    public static final Duration MAX_AGE = Duration.ofMinutes(10);

    /** One key as the directory lists it, with its status and validity window (Unix seconds). */
    public record Key(AgencyKey key, String use, String status, long nbf, Long exp, Long revokedAt) {
        /** Usable for something signed or sealed at `t`: inside [nbf, exp] and before any revocation. */
        public boolean validAt(Instant t) {
            double at = t.getEpochSecond() + t.getNano() / 1e9;
            if (revokedAt != null && revokedAt <= at) {
                return false;
            }
            return nbf <= at && (exp == null || at <= exp);
        }
    }

    public record Agency(String id, String kind, String name, List<Key> keys) {}

    private final long iat;
    private final List<Agency> agencies;

    private Directory(long iat, List<Agency> agencies) {
        this.iat = iat;
        this.agencies = List.copyOf(agencies);
    }

    public long iat() {
        return iat;
    }

    public List<Agency> agencies() {
        return agencies;
    }

    /** The pinned directory key of an identity folder (`directory.pin.jwk.json`). */
    public static AgencyKey loadPin(Path folder) {
        Path path = folder.resolve(PIN_FILE);
        try {
            return AgencyKey.fromJwk(SIGNER, Json.MAPPER.readTree(Files.readString(path)));
        } catch (NoSuchFileException e) {
            throw new EnvelopeException("key_file", "no pinned directory key at " + path
                    + "; pin the desk's directory key first");
        } catch (IOException | IllegalArgumentException | EnvelopeException e) {
            throw new EnvelopeException("key_file", path + " is not a public JWK");
        }
    }

    /** `GET /v1/directory`'s answer ({jws, kid}) checked against the pin and for age at `now`. */
    public static Directory verify(JsonNode signed, AgencyKey pinned, Instant now) {
        if (!signed.path("jws").isTextual() || !signed.path("kid").isTextual()) {
            throw untrusted("the answer is not a signed directory");
        }
        if (!pinned.kid().equals(signed.get("kid").asText())) {
            throw untrusted("the directory is signed by " + signed.get("kid").asText() + ", not by the pinned key");
        }
        byte[] payload;
        CompactJws.Parts jws;
        try {
            jws = CompactJws.read(signed.get("jws").asText());
            payload = CompactJws.verify(jws, kid -> pinned, java.util.Set.of(CompactJws.ED25519));
        } catch (EnvelopeException e) {
            throw untrusted("the directory signature does not verify with the pinned key");
        }
        if (!TYP.equals(jws.header().path("typ").asText())) {
            throw untrusted("the signed document is not a deskbridge directory");
        }
        Directory directory;
        try {
            directory = parse(Json.object(payload, "directory"));
        } catch (RuntimeException e) {
            throw untrusted("the signed directory is malformed");
        }
        long age = now.getEpochSecond() - directory.iat;
        if (age > MAX_AGE.toSeconds()) {
            throw untrusted("the directory was signed " + age + " s ago; a replayed old copy is refused");
        }
        if (age < -300) {
            throw untrusted("the directory is dated in the future");
        }
        return directory;
    }

    private static Directory parse(ObjectNode document) {
        if (!document.path("iat").canConvertToLong() || !document.path("agencies").isArray()) {
            throw new IllegalArgumentException("no iat or agencies");
        }
        List<Agency> agencies = new ArrayList<>();
        for (JsonNode agency : document.get("agencies")) {
            String id = agency.get("id").asText();
            List<Key> keys = new ArrayList<>();
            for (JsonNode jwk : agency.get("keys")) {
                keys.add(new Key(AgencyKey.fromJwk(id, jwk), jwk.get("use").asText(), jwk.get("status").asText(),
                        jwk.get("nbf").asLong(), optionalLong(jwk, "exp"), optionalLong(jwk, "revoked_at")));
            }
            agencies.add(new Agency(id, agency.get("kind").asText(), agency.get("name").asText(), keys));
        }
        return new Directory(document.get("iat").asLong(), agencies);
    }

    private static Long optionalLong(JsonNode node, String member) {
        return node.hasNonNull(member) ? node.get(member).asLong() : null;
    }

    public Agency agency(String id) {
        return agencies.stream().filter(a -> a.id().equals(id)).findFirst()
                .orElseThrow(() -> new EnvelopeException("unknown_agency", id + " is not in the directory"));
    }

    /**
     * A lookup for signing keys good at `at` (the notice's `sent_at`): old notices verify with rotated-out
     * keys; a key revoked before then, or outside its window, is refused. The key's agency is reported
     * with it, so a key of another agency shows as `signer_mismatch`.
     */
    public Function<String, AgencyKey> signingKeys(Instant at) {
        return kid -> {
            for (Agency agency : agencies) {
                for (Key key : agency.keys()) {
                    if ("sig".equals(key.use()) && key.key().kid().equals(kid)) {
                        if (!key.validAt(at)) {
                            throw new EnvelopeException(key.revokedAt() != null ? "key_revoked" : "key_not_valid",
                                    "key " + kid + " of " + agency.id() + " was not valid at " + at);
                        }
                        return key.key();
                    }
                }
            }
            throw new EnvelopeException("unknown_key", "no signing key " + kid + " in the directory");
        };
    }

    /** The newest `enc` key an agency currently takes notices under. */
    public AgencyKey encryptionKey(String agencyId) {
        List<Key> usable = agency(agencyId).keys().stream()
                .filter(k -> "enc".equals(k.use()) && "active".equals(k.status())).toList();
        if (usable.isEmpty()) {
            throw new EnvelopeException("unknown_key", agencyId + " has no active encryption key in the directory");
        }
        return usable.get(usable.size() - 1).key(); // listed in the order they were registered
    }

    private static EnvelopeException untrusted(String detail) {
        return new EnvelopeException("directory_untrusted", "directory refused: " + detail);
    }
}
