package org.deskbridge.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import org.deskbridge.client.cli.Main;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The command line and the signed directory against a stand-in gateway on loopback that serves a directory
 * signed by a test key and an inbox holding the published vector envelope (and a tampered copy).
 */
class PartnerCliTest {
    static final String NOTICE_ID = "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34";
    static final String TAMPERED_ID = "00000000-0000-4000-8000-000000000001";
    // The directory key of these tests: interpol's vector key (only its signing half is used).
    static final AgencyKeys DIRECTORY_KEY = VectorsTest.keys("interpol-ncb-phnom-penh");

    @TempDir
    Path home;

    HttpServer server;
    long directoryIat = Instant.now().getEpochSecond();
    final List<JsonNode> acks = new ArrayList<>();

    @BeforeEach
    void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/v1/directory", exchange -> answer(exchange, 200, signedDirectory(directoryIat)));
        server.createContext("/v1/inbox/stream", this::stream);
        server.createContext("/v1/inbox", this::inbox);
        server.start();
        Path folder = Files.createDirectories(home.resolve("kh-cnp"));
        Files.writeString(folder.resolve("credential"), "test-credential\n");
        ObjectNode keys = VectorsTest.KEYS.get("kh-cnp").deepCopy();
        keys.put("agency", "kh-cnp");
        Files.writeString(folder.resolve("keys.jwks.json"), Json.write(keys));
        Files.writeString(folder.resolve(Directory.PIN_FILE), Json.write(pin()));
    }

    @AfterEach
    void stop() {
        server.stop(0);
    }

    static ObjectNode pin() {
        for (JsonNode jwk : VectorsTest.KEYS.get("interpol-ncb-phnom-penh").get("keys")) {
            if ("sig".equals(jwk.get("use").asText())) {
                ObjectNode pub = jwk.deepCopy();
                pub.remove("d");
                return pub;
            }
        }
        throw new IllegalStateException();
    }

    static ObjectNode signedDirectory(long iat) {
        ObjectNode document = Json.MAPPER.createObjectNode();
        document.put("iss", "deskbridge-directory").put("iat", iat);
        ArrayNode agencies = document.putArray("agencies");
        VectorsTest.KEYS.properties().forEach(entry -> {
            ObjectNode agency = agencies.addObject();
            agency.put("id", entry.getKey()).put("name", entry.getKey().toUpperCase()).put("kind",
                    entry.getKey().equals("kr-desk") ? "desk" : "partner");
            ArrayNode keys = agency.putArray("keys");
            for (JsonNode jwk : entry.getValue().get("keys")) {
                ObjectNode key = jwk.deepCopy();
                key.remove("d");
                key.put("status", "active").put("nbf", 1_700_000_000L);
                keys.add(key);
            }
        });
        String jws = CompactJws.sign(Json.write(document).getBytes(StandardCharsets.UTF_8), DIRECTORY_KEY,
                Directory.TYP, null);
        ObjectNode signed = Json.MAPPER.createObjectNode();
        signed.put("jws", jws).put("kid", DIRECTORY_KEY.signingKid());
        return signed;
    }

    void inbox(HttpExchange exchange) throws IOException {
        String path = exchange.getRequestURI().getPath();
        boolean signed = exchange.getRequestHeaders().getFirst("Signature") != null
                && exchange.getRequestHeaders().getFirst("Authorization") == null;
        signedRequests += signed ? 1 : 0;
        if (!signed && !"Bearer test-credential".equals(exchange.getRequestHeaders().getFirst("Authorization"))) {
            answer(exchange, 401, Json.object("{\"code\":\"unauthorized\",\"detail\":\"no\"}", "problem"));
        } else if (path.endsWith("/ack")) {
            acks.add(Json.object(exchange.getRequestBody().readAllBytes(), "ack"));
            answer(exchange, 200, Json.object("{}", "ack"));
        } else if (String.valueOf(exchange.getRequestURI().getQuery()).contains("after=c2")) {
            answer(exchange, 200, Json.object("{\"items\":[],\"next_cursor\":null}", "page"));
        } else {
            ObjectNode page = Json.MAPPER.createObjectNode();
            ArrayNode items = page.putArray("items");
            items.add(item(NOTICE_ID, VectorsTest.read("envelope.json"), "c1"));
            ObjectNode outer = Json.object(VectorsTest.read("envelope.json"), "envelope");
            byte[] signature = Base64Url.decode(outer.get("signature").asText());
            signature[3] ^= 1;
            outer.put("signature", Base64Url.encode(signature));
            items.add(item(TAMPERED_ID, Json.write(outer), "c2"));
            page.put("next_cursor", "c2");
            answer(exchange, 200, page);
        }
    }

    final List<String> resumedFrom = new ArrayList<>();
    int signedRequests;

    /** One notice event, then the connection drops; the client comes back with Last-Event-ID and is refused. */
    void stream(HttpExchange exchange) throws IOException {
        String resume = exchange.getRequestHeaders().getFirst("Last-Event-ID");
        if (resume != null) {
            resumedFrom.add(resume);
            answer(exchange, 403, Json.object("{\"code\":\"forbidden\",\"detail\":\"no\"}", "problem"));
            return;
        }
        exchange.getResponseHeaders().add("Content-Type", "text/event-stream");
        exchange.sendResponseHeaders(200, 0);
        String data = Json.write(item(NOTICE_ID, VectorsTest.read("envelope.json"), "c1"));
        exchange.getResponseBody().write((": keep-alive\n\nevent: notice\nid: c1\ndata: " + data + "\n\n")
                .getBytes(StandardCharsets.UTF_8));
        exchange.close();
    }

    static ObjectNode item(String noticeId, String envelope, String cursor) {
        ObjectNode item = Json.MAPPER.createObjectNode();
        item.put("notice_id", noticeId).put("sender", "kr-desk").put("state", "delivered").put("cursor", cursor)
                .put("envelope", envelope);
        return item;
    }

    static void answer(HttpExchange exchange, int status, JsonNode body) throws IOException {
        byte[] bytes = Json.write(body).getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().add("Content-Type", "application/json");
        exchange.sendResponseHeaders(status, bytes.length);
        exchange.getResponseBody().write(bytes);
        exchange.close();
    }

    record Run(int status, String out, String err) {}

    Run cli(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        List<String> all = new ArrayList<>(List.of("--server", "http://127.0.0.1:" + server.getAddress().getPort(),
                "--home", home.toString()));
        all.addAll(List.of(args));
        int status = Main.run(all.toArray(String[]::new), new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(status, out.toString(), err.toString());
    }

    @Test
    void pullsOpensAcknowledgesAndReportsTheRefusedItem() {
        Run run = cli("--as", "kh-cnp", "inbox", "pull", "--json");
        assertEquals(3, run.status(), run.err());
        String[] lines = run.out().strip().split("\n");
        assertEquals(1, lines.length, run.out());
        JsonNode line = Json.object(lines[0], "line");
        assertEquals("c1", line.get("cursor").asText());
        assertEquals("kr-desk", line.get("verified_by").asText());
        assertTrue(line.get("acknowledged").asBoolean());
        assertEquals(VectorsTest.read("notice.canonical.json"), Json.canonicalText(line.get("notice")));
        assertEquals("refused " + TAMPERED_ID + ": bad_signature: outer signature does not verify", run.err().strip());
        assertEquals(1, acks.size());
        Receipts.verify(acks.get(0).get("receipt").asText(), VectorsTest.signingKeys(), "kh-cnp", NOTICE_ID,
                VectorsTest.read("envelope.json"));
    }

    @Test
    void streamsTheInboxAndResumesFromTheLastEventId() {
        Run run = cli("--as", "kh-cnp", "inbox", "pull", "--stream", "--json");
        assertEquals(1, run.status(), run.err());
        assertEquals("c1", Json.object(run.out().strip(), "line").get("cursor").asText());
        assertEquals(List.of("c1"), resumedFrom);
        assertEquals(1, acks.size());
        assertEquals("error: client_error: GET /v1/inbox/stream failed with 403", run.err().strip());
    }

    @Test
    void signsRequestsInsteadOfSendingTheCredentialWhenAsked() {
        Run run = cli("--as", "kh-cnp", "--sign", "inbox", "pull", "--json", "--no-ack");
        assertEquals(3, run.status(), run.err());
        assertEquals(2, signedRequests); // the two pages
    }

    @Test
    void showsTheDirectory() {
        Run run = cli("--as", "kh-cnp", "directory", "show");
        assertEquals(0, run.status(), run.err());
        assertTrue(run.out().contains("kh-cnp partner KH-CNP\n  sig "), run.out());
    }

    @Test
    void refusesAnOldDirectoryOrOneSignedByAnotherKey() {
        directoryIat = Instant.now().getEpochSecond() - 11 * 60;
        Run old = cli("--as", "kh-cnp", "directory", "show");
        assertEquals(1, old.status());
        assertTrue(old.err().startsWith("error: directory_untrusted: "), old.err());

        AgencyKey other = VectorsTest.signingKeys().apply(VectorsTest.keys("kr-desk").signingKid());
        EnvelopeException e = assertThrows(EnvelopeException.class,
                () -> Directory.verify(signedDirectory(Instant.now().getEpochSecond()), other, Instant.now()));
        assertEquals("directory_untrusted", e.code());
    }

    @Test
    void usageErrorsExitTwoAndFailuresOne() {
        assertEquals(2, cli("inbox", "pull").status()); // no --as
        assertEquals(2, cli("--as", "kh-cnp", "inbox").status());
        assertEquals(2, cli("--as", "kh-cnp", "reply", "--to", NOTICE_ID).status());
        Run missing = cli("--as", "nobody", "directory", "show");
        assertEquals(1, missing.status());
        assertTrue(missing.err().startsWith("error: key_file: no key file at "), missing.err());
    }

    @Test
    void judgesSigningKeysAtTheTimeOfSending() {
        Directory directory = Directory.verify(signedDirectory(Instant.now().getEpochSecond()),
                AgencyKey.fromJwk("deskbridge-directory", pin()), Instant.now());
        String kid = VectorsTest.keys("kr-desk").signingKid();
        assertEquals("kr-desk", directory.signingKeys(Instant.ofEpochSecond(1_750_000_000L)).apply(kid).agency());
        EnvelopeException early = assertThrows(EnvelopeException.class,
                () -> directory.signingKeys(Instant.ofEpochSecond(1_600_000_000L)).apply(kid));
        assertEquals("key_not_valid", early.code());
        EnvelopeException unknown = assertThrows(EnvelopeException.class,
                () -> directory.signingKeys(Instant.now()).apply("nope"));
        assertEquals("unknown_key", unknown.code());
        assertEquals(VectorsTest.encryptionKey("kh-cnp").kid(), directory.encryptionKey("kh-cnp").kid());
    }
}
