package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import javax.crypto.Cipher;
import javax.crypto.KeyAgreement;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The deskbridge envelope (docs/envelope.md): an outer flattened JWS over a general JSON JWE
 * (A256GCM, ECDH-ES+A256KW with X25519 per recipient) of a compact JWS over the canonical notice.
 * Built on the JDK's own Ed25519, X25519, AES key wrap and AES-GCM.
 */
public final class Envelope {
    public static final int MAX_BYTES = 2 * 1024 * 1024;
    public static final String NOTICE_TYP = "deskbridge-notice+jws";
    public static final String SEALED_TYP = "deskbridge-notice+jwe";
    public static final String ENVELOPE_TYP = "deskbridge-envelope+jws";
    public static final String CONTENT_ALG = "A256GCM";
    public static final String KEY_WRAP_ALG = "ECDH-ES+A256KW";
    private static final Set<String> OUTER_MEMBERS = Set.of("payload", "protected", "signature");
    private static final Set<String> JWE_MEMBERS = Set.of("protected", "iv", "ciphertext", "tag", "recipients",
            "aad", "unprotected");
    private static final Set<String> JWE_HEADER = Set.of("enc", "typ", "cty", "sender", "notice_id",
            "notice_type", "priority", "tlp", "case_ref", "recipients", "sent_at", "expires_at", "in_reply_to",
            "forwarded_from");
    private static final Set<String> OUTER_HEADER = Set.of("alg", "kid", "typ", "cty");
    private static final Set<String> RECIPIENT_HEADER = Set.of("alg", "kid", "epk");
    private static final SecureRandom RANDOM = new SecureRandom();

    private Envelope() {}

    /** An envelope read but not yet trusted: enough to look up the signer's key. */
    public record Parsed(String raw, String protectedB64, String payloadB64, byte[] signature, ObjectNode outerHeader,
                         ObjectNode jwe, ObjectNode routing) {
        public String kid() {
            return outerHeader.get("kid").asText();
        }

        public String sender() {
            return routing.get("sender").asText();
        }

        public String sha256() {
            return Okp.sha256Hex(raw.getBytes(StandardCharsets.UTF_8));
        }
    }

    /** What a recipient gets: the notice as signed, its bytes, and the inner JWS (proof of origin). */
    public record Opened(ObjectNode notice, byte[] canonical, String innerJws, String signer) {}

    // ---------------------------------------------------------------- sealing (§4)

    /** Signs, encrypts once for every recipient's `enc` key, and signs the result (§4); the envelope text. */
    public static String seal(ObjectNode notice, AgencyKeys signer, Collection<AgencyKey> recipients) {
        return seal(notice, signer, recipients, Notices.routingOf(notice));
    }

    /** As {@link #seal(ObjectNode, AgencyKeys, Collection)} under a given routing header (tests only). */
    static String seal(ObjectNode notice, AgencyKeys signer, Collection<AgencyKey> recipients, ObjectNode routing) {
        Notices.check(notice);
        if (!signer.agency().equals(notice.get("sender").asText())) {
            throw new EnvelopeException("signer_mismatch", "the notice's sender is not the signing agency");
        }
        List<String> addressed = new ArrayList<>(Notices.recipients(notice.get("recipients"), "recipients"));
        List<String> keyed = new ArrayList<>(recipients.stream().map(AgencyKey::agency).sorted().toList());
        addressed.sort(null);
        if (!addressed.equals(keyed) || addressed.contains(signer.agency())) {
            throw new EnvelopeException("recipient_mismatch", "a key is needed for exactly each addressed agency");
        }
        String inner = CompactJws.sign(Json.canonical(notice), signer, NOTICE_TYP, "json");

        ObjectNode header = Json.MAPPER.createObjectNode();
        header.put("enc", CONTENT_ALG).put("typ", SEALED_TYP).put("cty", "JOSE");
        header.setAll(routing);
        String protectedB64 = Base64Url.encode(Json.write(header));
        byte[] cek = random(32);
        byte[] iv = random(12);
        byte[] sealed;
        try {
            sealed = aesGcm(Cipher.ENCRYPT_MODE, cek, iv, protectedB64, inner.getBytes(StandardCharsets.US_ASCII));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM failed", e);
        }
        ObjectNode jwe = Json.MAPPER.createObjectNode();
        jwe.put("protected", protectedB64);
        ArrayNode entries = jwe.putArray("recipients");
        for (AgencyKey recipient : recipients) {
            entries.add(wrapFor(recipient, cek));
        }
        jwe.put("iv", Base64Url.encode(iv));
        jwe.put("ciphertext", Base64Url.encode(Arrays.copyOf(sealed, sealed.length - 16)));
        jwe.put("tag", Base64Url.encode(Arrays.copyOfRange(sealed, sealed.length - 16, sealed.length)));

        ObjectNode outerHeader = Json.MAPPER.createObjectNode();
        outerHeader.put("alg", CompactJws.ED25519).put("kid", signer.signingKid()).put("typ", ENVELOPE_TYP)
                .put("cty", SEALED_TYP);
        String outerProtected = Base64Url.encode(Json.write(outerHeader));
        String payload = Base64Url.encode(Json.canonical(jwe));
        byte[] signature = signer.sign((outerProtected + "." + payload).getBytes(StandardCharsets.US_ASCII));
        ObjectNode envelope = Json.MAPPER.createObjectNode();
        envelope.put("payload", payload).put("protected", outerProtected).put("signature", Base64Url.encode(signature));
        return Json.canonicalText(envelope);
    }

    private static ObjectNode wrapFor(AgencyKey recipient, byte[] cek) {
        if (!Okp.X25519.equals(recipient.crv())) {
            throw new IllegalArgumentException("key " + recipient.kid() + " is not an X25519 key");
        }
        KeyPair ephemeral;
        try {
            ephemeral = KeyPairGenerator.getInstance(Okp.X25519).generateKeyPair();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
        byte[] kek = kek(ephemeral.getPrivate(), recipient.key());
        ObjectNode entry = Json.MAPPER.createObjectNode();
        ObjectNode header = entry.putObject("header");
        header.put("alg", KEY_WRAP_ALG).put("kid", recipient.kid());
        header.putObject("epk").put("kty", "OKP").put("crv", Okp.X25519)
                .put("x", Base64Url.encode(Okp.raw(ephemeral.getPublic())));
        try {
            Cipher wrap = Cipher.getInstance("AESWrap");
            wrap.init(Cipher.WRAP_MODE, new SecretKeySpec(kek, "AES"));
            entry.put("encrypted_key", Base64Url.encode(wrap.wrap(new SecretKeySpec(cek, "AES"))));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES key wrap failed", e);
        }
        return entry;
    }

    // ---------------------------------------------------------------- opening (§5)

    /** Steps 1-3 of §5: reads the outer JWS and the routing header; checks shape only, trusts nothing. */
    public static Parsed parse(String raw) {
        if (raw.getBytes(StandardCharsets.UTF_8).length > MAX_BYTES) {
            throw new EnvelopeException("oversize", "envelope is over " + MAX_BYTES + " bytes");
        }
        ObjectNode outer = Json.object(raw, "envelope");
        if (!membersExactly(outer, OUTER_MEMBERS) || !allText(outer, OUTER_MEMBERS)) {
            throw new EnvelopeException("malformed", "the envelope needs exactly payload, protected and signature");
        }
        String protectedB64 = outer.get("protected").asText();
        String payloadB64 = outer.get("payload").asText();
        ObjectNode outerHeader = Json.object(Base64Url.decode(protectedB64), "outer protected header");
        ObjectNode jwe = Json.object(Base64Url.decode(payloadB64), "JWE");
        byte[] signature = Base64Url.decode(outer.get("signature").asText());
        checkJweShape(jwe);
        ObjectNode routing = Json.object(Base64Url.decode(jwe.get("protected").asText()), "JWE protected header");
        Notices.checkRouting(routing);
        for (String member : List.of("iv", "ciphertext", "tag")) {
            Base64Url.decode(jwe.get(member).asText());
        }
        for (JsonNode entry : jwe.get("recipients")) {
            Base64Url.decode(entry.get("encrypted_key").asText());
        }
        if (!CompactJws.ED25519_OR_LEGACY.contains(outerHeader.path("alg").asText())) {
            throw new EnvelopeException("bad_algorithm", "outer signature algorithm " + outerHeader.get("alg")
                    + " is not accepted");
        }
        if (!outerHeader.path("kid").isTextual() || outerHeader.get("kid").asText().isEmpty()) {
            throw new EnvelopeException("malformed", "outer protected header has no kid");
        }
        if (!ENVELOPE_TYP.equals(outerHeader.path("typ").asText()) || !SEALED_TYP.equals(routing.path("typ").asText())) {
            throw new EnvelopeException("malformed", "envelope typ headers are not deskbridge's");
        }
        if (!CONTENT_ALG.equals(routing.path("enc").asText())) {
            throw new EnvelopeException("bad_algorithm", "content encryption must be " + CONTENT_ALG);
        }
        for (JsonNode entry : jwe.get("recipients")) {
            if (!KEY_WRAP_ALG.equals(entry.get("header").path("alg").asText())) {
                throw new EnvelopeException("bad_algorithm", "key wrapping must be " + KEY_WRAP_ALG);
            }
        }
        return new Parsed(raw, protectedB64, payloadB64, signature, outerHeader, jwe, routing);
    }

    private static void checkJweShape(ObjectNode jwe) {
        boolean ok = jwe.size() <= JWE_MEMBERS.size();
        Iterator<String> names = jwe.fieldNames();
        while (names.hasNext()) {
            ok &= JWE_MEMBERS.contains(names.next());
        }
        ok &= allText(jwe, Set.of("protected", "iv", "ciphertext", "tag"));
        JsonNode entries = jwe.get("recipients");
        ok &= entries != null && entries.isArray() && entries.size() >= 1 && entries.size() <= 50;
        if (ok) {
            for (JsonNode entry : entries) {
                ok &= entry.isObject() && membersExactly((ObjectNode) entry, Set.of("header", "encrypted_key"))
                        && entry.get("header").isObject() && entry.get("encrypted_key").isTextual();
            }
        }
        if (!ok) {
            throw new EnvelopeException("malformed", "the payload is not a general JSON JWE as docs/envelope.md §4.2");
        }
    }

    /** Step 4: the outer signature, by a key of the routing sender; needs no decryption key. */
    public static void verifyOuter(Parsed envelope, AgencyKey signer) {
        if (!signer.agency().equals(envelope.sender())) {
            throw new EnvelopeException("signer_mismatch", "key " + signer.kid() + " is not a key of " + envelope.sender());
        }
        if (!onlyMembers(envelope.outerHeader(), OUTER_HEADER)) {
            throw new EnvelopeException("bad_signature", "the outer JWS header has a parameter we do not understand");
        }
        byte[] input = (envelope.protectedB64() + "." + envelope.payloadB64()).getBytes(StandardCharsets.US_ASCII);
        if (!Okp.ED25519.equals(signer.crv()) || !Okp.verify(signer.key(), input, envelope.signature())) {
            throw new EnvelopeException("bad_signature", "outer signature does not verify");
        }
    }

    /**
     * Steps 4-9 of §5. `signerKey(kid)` is the sender's signing key from the directory as of `sent_at`
     * (or throws EnvelopeException: unknown_key, key_revoked, key_not_valid); `myKeys` every X25519 key we hold.
     */
    public static Opened open(Parsed envelope, Map<String, PrivateKey> myKeys, Function<String, AgencyKey> signerKey) {
        verifyOuter(envelope, signerKey.apply(envelope.kid()));
        JsonNode entry = null;
        for (JsonNode candidate : envelope.jwe().get("recipients")) {
            if (myKeys.containsKey(candidate.get("header").path("kid").asText())) {
                entry = candidate;
                break;
            }
        }
        if (entry == null) {
            throw new EnvelopeException("not_a_recipient", "none of the envelope's recipient keys is ours");
        }
        String inner = decrypt(envelope, entry, myKeys.get(entry.get("header").get("kid").asText()));

        CompactJws.Parts jws;
        try {
            jws = CompactJws.read(inner);
        } catch (EnvelopeException e) {
            throw new EnvelopeException("malformed", "the inner JWS is not a compact JWS: " + e.detail());
        }
        if (jws.kid() == null) {
            throw new EnvelopeException("malformed", "inner JWS has no kid");
        }
        AgencyKey innerSigner = signerKey.apply(jws.kid());
        if (!innerSigner.agency().equals(envelope.sender())) {
            throw new EnvelopeException("signer_mismatch", "the inner signature is not the sender's");
        }
        byte[] payload;
        try {
            payload = CompactJws.verify(jws, kid -> innerSigner, CompactJws.ED25519_OR_LEGACY);
        } catch (EnvelopeException e) {
            throw new EnvelopeException("bad_signature", "inner signature does not verify: " + e.detail());
        }
        ObjectNode notice;
        try {
            notice = Json.object(payload, "signed notice");
            Notices.check(notice);
        } catch (EnvelopeException e) {
            throw new EnvelopeException("malformed", "signed notice is not valid: " + e.detail());
        }
        Notices.checkBinding(envelope.routing(), notice);
        return new Opened(notice, payload, inner, innerSigner.agency());
    }

    private static String decrypt(Parsed envelope, JsonNode entry, PrivateKey mine) {
        ObjectNode jwe = envelope.jwe();
        if (jwe.has("aad") || jwe.has("unprotected")) {
            throw new EnvelopeException("undecryptable", "the JWE has aad or an unprotected header; we use neither");
        }
        ObjectNode header = (ObjectNode) entry.get("header");
        if (!onlyMembers(envelope.routing(), JWE_HEADER) || !onlyMembers(header, RECIPIENT_HEADER)) {
            throw new EnvelopeException("undecryptable", "the JWE has a header parameter we do not understand (e.g. zip)");
        }
        JsonNode epk = header.get("epk");
        try {
            if (epk == null || !"OKP".equals(epk.path("kty").asText()) || !Okp.X25519.equals(epk.path("crv").asText())) {
                throw new GeneralSecurityException("epk is not an X25519 key");
            }
            PublicKey ephemeral = Okp.publicKey(Okp.X25519, Base64Url.decode(epk.path("x").asText()));
            byte[] kek = kek(mine, ephemeral);
            Cipher unwrap = Cipher.getInstance("AESWrap");
            unwrap.init(Cipher.UNWRAP_MODE, new SecretKeySpec(kek, "AES"));
            Key cek = unwrap.unwrap(Base64Url.decode(entry.get("encrypted_key").asText()), "AES", Cipher.SECRET_KEY);
            byte[] iv = Base64Url.decode(jwe.get("iv").asText());
            byte[] tag = Base64Url.decode(jwe.get("tag").asText());
            if (cek.getEncoded().length != 32 || iv.length != 12 || tag.length != 16) {
                throw new GeneralSecurityException("wrong key, IV or tag length");
            }
            byte[] plaintext = aesGcm(Cipher.DECRYPT_MODE, cek.getEncoded(), iv, jwe.get("protected").asText(),
                    Okp.concat(Base64Url.decode(jwe.get("ciphertext").asText()), tag));
            if (plaintext.length == 0) {
                throw new GeneralSecurityException("the envelope has no content");
            }
            return new String(plaintext, StandardCharsets.US_ASCII);
        } catch (GeneralSecurityException | IllegalArgumentException | IllegalStateException | EnvelopeException e) {
            throw new EnvelopeException("undecryptable", "the envelope does not decrypt with our key");
        }
    }

    // ---------------------------------------------------------------- primitives

    /** ECDH-ES key agreement and the Concat KDF of RFC 7518 §4.6.2 (SHA-256, 256 bits, no apu/apv). */
    static byte[] kek(PrivateKey own, PublicKey other) {
        byte[] z;
        try {
            KeyAgreement agreement = KeyAgreement.getInstance(Okp.X25519);
            agreement.init(own);
            agreement.doPhase(other, true);
            z = agreement.generateSecret();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("X25519 agreement failed", e);
        }
        byte[] algorithm = KEY_WRAP_ALG.getBytes(StandardCharsets.US_ASCII);
        ByteBuffer info = ByteBuffer.allocate(4 + z.length + 4 + algorithm.length + 4 + 4 + 4);
        info.putInt(1).put(z).putInt(algorithm.length).put(algorithm).putInt(0).putInt(0).putInt(256);
        return Okp.sha256(info.array());
    }

    private static byte[] aesGcm(int mode, byte[] key, byte[] iv, String aad, byte[] input)
            throws GeneralSecurityException {
        Cipher gcm = Cipher.getInstance("AES/GCM/NoPadding");
        SecretKey secret = new SecretKeySpec(key, "AES");
        gcm.init(mode, secret, new GCMParameterSpec(128, iv));
        gcm.updateAAD(aad.getBytes(StandardCharsets.US_ASCII));
        return gcm.doFinal(input);
    }

    private static byte[] random(int length) {
        byte[] out = new byte[length];
        RANDOM.nextBytes(out);
        return out;
    }

    private static boolean membersExactly(ObjectNode node, Set<String> members) {
        return node.size() == members.size() && onlyMembers(node, members);
    }

    private static boolean onlyMembers(ObjectNode node, Set<String> members) {
        Iterator<String> names = node.fieldNames();
        while (names.hasNext()) {
            if (!members.contains(names.next())) {
                return false;
            }
        }
        return true;
    }

    private static boolean allText(ObjectNode node, Set<String> members) {
        return members.stream().allMatch(m -> node.path(m).isTextual());
    }
}
