package org.deskbridge.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** The published test vectors (tests/vectors, docs/envelope.md) against this client. */
class VectorsTest {
    static final Path VECTORS = Path.of("../../tests/vectors");
    static final JsonNode KEYS = readJson("keys.json").get("agencies");

    static JsonNode readJson(String name) {
        try {
            return Json.MAPPER.readTree(Files.readString(VECTORS.resolve(name)));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static String read(String name) {
        try {
            return Files.readString(VECTORS.resolve(name), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static AgencyKeys keys(String agency) {
        return AgencyKeys.fromJwks(agency, KEYS.get(agency));
    }

    /** The public keys of keys.json as a directory would publish them: a signing-key lookup. */
    static Function<String, AgencyKey> signingKeys() {
        Map<String, AgencyKey> byKid = new HashMap<>();
        KEYS.properties().forEach(agency -> agency.getValue().get("keys").forEach(jwk -> {
            if ("sig".equals(jwk.get("use").asText())) {
                ObjectNode pub = ((ObjectNode) jwk.deepCopy());
                pub.remove("d");
                AgencyKey key = AgencyKey.fromJwk(agency.getKey(), pub);
                byKid.put(key.kid(), key);
            }
        }));
        return kid -> {
            AgencyKey key = byKid.get(kid);
            if (key == null) {
                throw new EnvelopeException("unknown_key", "no signing key " + kid);
            }
            return key;
        };
    }

    static AgencyKey encryptionKey(String agency) {
        for (JsonNode jwk : KEYS.get(agency).get("keys")) {
            if ("enc".equals(jwk.get("use").asText())) {
                ObjectNode pub = jwk.deepCopy();
                pub.remove("d");
                return AgencyKey.fromJwk(agency, pub);
            }
        }
        throw new IllegalStateException();
    }

    static Envelope.Opened open(String envelope, String as) {
        return Envelope.open(Envelope.parse(envelope), keys(as).decryptionKeys(), signingKeys());
    }

    static void assertRefused(String code, Executable action) {
        EnvelopeException e = assertThrows(EnvelopeException.class, action);
        assertEquals(code, e.code(), e.detail());
    }

    @Test
    void keyIdsAreRfc7638Thumbprints() {
        KEYS.properties().forEach(agency -> agency.getValue().get("keys").forEach(jwk ->
                assertEquals(jwk.get("kid").asText(), Okp.thumbprint(jwk.get("crv").asText(), jwk.get("x").asText()))));
        assertEquals(KEYS.get("kr-desk").get("keys").get(0).get("kid").asText(), keys("kr-desk").signingKid());
    }

    @Test
    void opensTheNoticeAsEachRecipient() {
        for (String as : List.of("kh-cnp", "interpol-ncb-phnom-penh")) {
            Envelope.Opened opened = open(read("envelope.json"), as);
            assertEquals(read("notice.jws"), opened.innerJws());
            assertArrayEquals(read("notice.canonical.json").getBytes(StandardCharsets.UTF_8), opened.canonical());
            assertEquals(Json.canonicalText(readJson("notice.json")), Json.canonicalText(opened.notice()));
            assertEquals("kr-desk", opened.signer());
        }
    }

    @Test
    void opensTheReplyAsTheDesk() {
        Envelope.Opened opened = open(read("reply.envelope.json"), "kr-desk");
        assertEquals(read("reply.jws"), opened.innerJws());
        assertArrayEquals(read("reply.canonical.json").getBytes(StandardCharsets.UTF_8), opened.canonical());
        assertEquals("kh-cnp", opened.signer());
        assertEquals("2025-03-31T10:17:42.250000Z", opened.notice().get("sent_at").asText());
    }

    @Test
    void reproducesTheCanonicalJsonAndTheInnerJws() {
        for (String name : List.of("notice", "reply")) {
            byte[] canonical = Json.canonical(readJson(name + ".json"));
            assertEquals(read(name + ".canonical.json"), new String(canonical, StandardCharsets.UTF_8));
            String sender = readJson(name + ".json").get("sender").asText();
            assertEquals(read(name + ".jws"), CompactJws.sign(canonical, keys(sender), Envelope.NOTICE_TYP, "json"));
        }
    }

    @Test
    void canonicalNumbersAreEcmaScriptsAndTextIsRawUtf8() {
        JsonNode value = Json.object("{\"b\":[11.0,-0.0,1e-7,0.00001,1e21,10.6093],\"a\":\"\u2028\u007f\\u0001/\\\"\"}", "t");
        assertEquals("{\"a\":\"\u2028\u007f\\u0001/\\\"\",\"b\":[11,0,1e-7,0.00001,1e+21,10.6093]}", Json.canonicalText(value));
    }

    @Test
    void sealsTheNoticeAndOpensItBack() {
        ObjectNode notice = (ObjectNode) readJson("notice.json");
        String envelope = Envelope.seal(notice, keys("kr-desk"),
                List.of(encryptionKey("kh-cnp"), encryptionKey("interpol-ncb-phnom-penh")));
        assertTrue(envelope.startsWith("{\"payload\":"));
        for (String as : List.of("kh-cnp", "interpol-ncb-phnom-penh")) {
            Envelope.Opened opened = open(envelope, as);
            assertEquals(read("notice.jws"), opened.innerJws());
            assertEquals(Json.canonicalText(notice), Json.canonicalText(opened.notice()));
        }
        assertRefused("not_a_recipient", () -> open(envelope, "kr-desk"));
    }

    @Test
    void refusesAnEnvelopeForSomeoneElse() {
        assertRefused("not_a_recipient", () -> open(read("envelope.json"), "kr-desk"));
        assertRefused("not_a_recipient", () -> open(read("reply.envelope.json"), "kh-cnp"));
    }

    @Test
    void refusesATamperedOuterSignature() {
        ObjectNode outer = Json.object(read("envelope.json"), "envelope");
        String signature = outer.get("signature").asText();
        byte[] flipped = Base64Url.decode(signature);
        flipped[0] ^= 1;
        outer.put("signature", Base64Url.encode(flipped));
        assertRefused("bad_signature", () -> open(Json.write(outer), "kh-cnp"));
    }

    @Test
    void refusesATamperedCiphertextAsUndecryptable() {
        ObjectNode outer = Json.object(read("envelope.json"), "envelope");
        ObjectNode jwe = Json.object(Base64Url.decode(outer.get("payload").asText()), "JWE");
        byte[] ciphertext = Base64Url.decode(jwe.get("ciphertext").asText());
        ciphertext[5] ^= 1;
        jwe.put("ciphertext", Base64Url.encode(ciphertext));
        String resigned = resign(jwe, "kr-desk");
        assertRefused("undecryptable", () -> open(resigned, "kh-cnp"));
    }

    @Test
    void refusesARoutingHeaderThatDiffersFromTheSignedNotice() {
        ObjectNode notice = (ObjectNode) readJson("notice.json");
        ObjectNode routing = Notices.routingOf(notice);
        routing.put("priority", "routine");
        String envelope = Envelope.seal(notice, keys("kr-desk"),
                List.of(encryptionKey("kh-cnp"), encryptionKey("interpol-ncb-phnom-penh")), routing);
        assertRefused("header_mismatch", () -> open(envelope, "kh-cnp"));
        // The same instant at another offset is the same time (§6).
        ObjectNode sameInstant = Notices.routingOf(notice);
        sameInstant.put("sent_at", "2025-03-31T18:00:00+09:00");
        String same = Envelope.seal(notice, keys("kr-desk"),
                List.of(encryptionKey("kh-cnp"), encryptionKey("interpol-ncb-phnom-penh")), sameInstant);
        assertEquals(Json.canonicalText(notice), Json.canonicalText(open(same, "kh-cnp").notice()));
    }

    @Test
    void refusesAnEnvelopeSignedByAnotherAgency() {
        ObjectNode outer = Json.object(read("envelope.json"), "envelope");
        ObjectNode jwe = Json.object(Base64Url.decode(outer.get("payload").asText()), "JWE");
        assertRefused("signer_mismatch", () -> open(resign(jwe, "kh-cnp"), "interpol-ncb-phnom-penh"));
    }

    @Test
    void refusesMalformedAndWrongAlgorithms() {
        assertRefused("malformed", () -> Envelope.parse("[]"));
        ObjectNode outer = Json.object(read("envelope.json"), "envelope");
        ObjectNode padded = outer.deepCopy();
        padded.put("signature", outer.get("signature").asText() + "=");
        assertRefused("malformed", () -> Envelope.parse(Json.write(padded)));
        ObjectNode extra = outer.deepCopy();
        extra.putObject("header");
        assertRefused("malformed", () -> Envelope.parse(Json.write(extra)));
        ObjectNode hs256 = outer.deepCopy();
        hs256.put("protected", Base64Url.encode("{\"alg\":\"HS256\",\"kid\":\"k\",\"typ\":\"deskbridge-envelope+jws\"}"));
        assertRefused("bad_algorithm", () -> Envelope.parse(Json.write(hs256)));
        assertRefused("oversize", () -> Envelope.parse(" ".repeat(Envelope.MAX_BYTES + 1)));
    }

    @Test
    void signsAndChecksReceipts() {
        String envelope = read("envelope.json");
        String receipt = Receipts.make(keys("kh-cnp"), "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34", envelope,
                Instant.ofEpochSecond(1_743_411_600L));
        ObjectNode payload = Receipts.verify(receipt, signingKeys(), "kh-cnp", "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34",
                envelope);
        assertEquals(Okp.sha256Hex(envelope.getBytes(StandardCharsets.UTF_8)), payload.get("envelope_sha256").asText());
        assertEquals("{\"alg\":\"Ed25519\",\"kid\":\"" + keys("kh-cnp").signingKid() + "\",\"typ\":\"deskbridge-receipt+jws\"}",
                new String(Base64Url.decode(receipt.split("\\.")[0]), StandardCharsets.UTF_8));
        assertRefused("bad_receipt", () -> Receipts.verify(receipt, signingKeys(), "interpol-ncb-phnom-penh",
                "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34", envelope));
        assertRefused("bad_receipt", () -> Receipts.verify(receipt, signingKeys(), "kh-cnp",
                "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34", envelope + " "));
        String forged = receipt.substring(0, receipt.lastIndexOf('.') + 1) + Base64Url.encode(new byte[64]);
        assertRefused("bad_receipt", () -> Receipts.verify(forged, signingKeys(), "kh-cnp",
                "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34", envelope));
    }

    @Test
    void rendersADraftAsDeskbridgeDoes() {
        ObjectNode draft = (ObjectNode) readJson("notice.json");
        draft.remove("sender");
        draft.remove("sent_at");
        draft.putNull("in_reply_to");
        ((ObjectNode) draft.get("subjects").get(0)).put("name_latin", "  PARK Ji-hoon ");
        draft.put("expires_at", "2025-04-30T18:00:00.000+09:00");
        ObjectNode notice = Notices.fromDraft(draft, "kr-desk", "2025-03-31T09:00:00Z");
        assertEquals(read("notice.canonical.json"), Json.canonicalText(notice));
        assertEquals("2025-03-31T10:17:42.250000Z",
                Notices.renderTime(java.time.OffsetDateTime.parse("2025-03-31T10:17:42.25Z")));
    }

    @Test
    void checksTheNoticeSchemaAtEveryDepth() {
        Notices.check(readJson("notice.json"));
        Notices.check(readJson("reply.json"));
        List<java.util.function.Consumer<ObjectNode>> breakages = List.of(
                n -> n.put("colour", "x"),
                n -> n.remove("summary"),
                n -> n.put("sent_at", "2025-03-31T09:00:00"),
                n -> n.put("notice_id", "3F1C2A9E7B4D4E8A9C610D5E8F2A7B34"),
                n -> n.put("tlp", "white"),
                n -> ((ObjectNode) n.get("subjects").get(0)).put("eye_colour", "brown"),
                n -> ((ObjectNode) n.get("subjects").get(0)).put("date_of_birth", "1998-02-30"),
                n -> ((ObjectNode) n.get("locations").get(0)).remove("country"),
                n -> ((ObjectNode) n.get("locations").get(0).get("coordinates")).put("lat", 91),
                n -> ((ObjectNode) n.get("attachments").get(0)).put("data_b64", "not_base64url-"),
                n -> n.putArray("recipients").add("kh-cnp").add("kh-cnp"));
        for (java.util.function.Consumer<ObjectNode> breakage : breakages) {
            ObjectNode notice = (ObjectNode) readJson("notice.json");
            breakage.accept(notice);
            assertRefused("malformed", () -> Notices.check(notice));
        }
    }

    @Test
    void signsRequestsAsRfc9421AndDocsTrustSay() {
        java.net.URI target = java.net.URI.create("http://127.0.0.1:8080/v1/inbox?after=djE6MQ&limit=100");
        Map<String, String> fields = new RequestSigner(keys("kh-cnp")).sign("GET", target, new byte[0],
                Instant.ofEpochSecond(1_743_411_600L));
        // RFC 9530: the digest of an empty body.
        assertEquals("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:", fields.get("Content-Digest"));
        String params = fields.get("Signature-Input").substring("sig1=".length());
        assertTrue(params.matches("\\(\"@method\" \"@target-uri\" \"content-digest\"\\);created=1743411600;keyid=\""
                + keys("kh-cnp").signingKid() + "\";nonce=\"[A-Za-z0-9_-]{22}\";alg=\"ed25519\""), params);
        String base = "\"@method\": GET\n\"@target-uri\": " + target + "\n\"content-digest\": "
                + fields.get("Content-Digest") + "\n\"@signature-params\": " + params;
        String signature = fields.get("Signature");
        assertTrue(signature.startsWith("sig1=:") && signature.endsWith(":"));
        byte[] raw = java.util.Base64.getDecoder().decode(signature.substring(6, signature.length() - 1));
        AgencyKey key = signingKeys().apply(keys("kh-cnp").signingKid());
        assertTrue(Okp.verify(key.key(), base.getBytes(StandardCharsets.UTF_8), raw));
    }

    /** A new outer JWS by `agency` over `jwe` (to test what lies under a valid outer signature). */
    static String resign(ObjectNode jwe, String agency) {
        AgencyKeys signer = keys(agency);
        String header = Base64Url.encode("{\"alg\":\"Ed25519\",\"kid\":\"" + signer.signingKid()
                + "\",\"typ\":\"deskbridge-envelope+jws\",\"cty\":\"deskbridge-notice+jwe\"}");
        String payload = Base64Url.encode(Json.canonical(jwe));
        String signature = Base64Url.encode(signer.sign((header + "." + payload).getBytes(StandardCharsets.US_ASCII)));
        return "{\"payload\":\"" + payload + "\",\"protected\":\"" + header + "\",\"signature\":\"" + signature + "\"}";
    }
}
