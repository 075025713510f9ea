package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.nimbusds.jose.EncryptionMethod;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWEAlgorithm;
import com.nimbusds.jose.JWECryptoParts;
import com.nimbusds.jose.JWEHeader;
import com.nimbusds.jose.JWEObjectJSON;
import com.nimbusds.jose.JWSObject;
import com.nimbusds.jose.JWSObjectJSON;
import com.nimbusds.jose.Payload;
import com.nimbusds.jose.UnprotectedHeader;
import com.nimbusds.jose.crypto.X25519Decrypter;
import com.nimbusds.jose.crypto.X25519Encrypter;
import com.nimbusds.jose.jwk.OctetKeyPair;
import com.nimbusds.jose.util.Base64URL;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.text.ParseException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;

/**
 * The deskbridge envelope (docs/envelope.md): an outer flattened JWS over a general JSON JWE
 * (A256GCM, ECDH-ES+A256KW with X25519 per recipient) of a compact JWS over the canonical notice.
 * The JOSE operations are Nimbus JOSE+JWT's ({@link JWSObjectJSON}, {@link JWEObjectJSON},
 * {@link X25519Encrypter}, {@link X25519Decrypter}, Ed25519 via {@link CompactJws}); what the envelope
 * demands beyond JOSE (closed member sets, canonical base64url, the size cap, the steps of §5 in order
 * with their reason codes, the routing header and its binding) is checked here, around Nimbus.
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

    private Envelope() {}

    /** An envelope read but not yet trusted: enough to look up the signer's key. */
    public record Parsed(String raw, ObjectNode outerHeader, ObjectNode jwe, ObjectNode routing) {
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
        for (AgencyKey recipient : recipients) {
            if (!Okp.X25519.equals(recipient.crv())) {
                throw new IllegalArgumentException("key " + recipient.kid() + " is not an X25519 key");
            }
        }
        String inner = CompactJws.sign(Json.canonical(notice), signer, NOTICE_TYP, "json");

        ObjectNode header = Json.MAPPER.createObjectNode();
        header.put("enc", CONTENT_ALG).put("typ", SEALED_TYP).put("cty", "JOSE");
        header.setAll(routing);
        JWEObjectJSON jwe;
        try {
            jwe = encrypt(JWEHeader.parse(new Base64URL(Base64Url.encode(Json.write(header)))),
                    inner.getBytes(StandardCharsets.US_ASCII), recipients);
        } catch (ParseException | JOSEException | GeneralSecurityException e) {
            throw new IllegalStateException("sealing the JWE failed", e);
        }

        ObjectNode outerHeader = Json.MAPPER.createObjectNode();
        outerHeader.put("alg", CompactJws.ED25519).put("kid", signer.signingKid()).put("typ", ENVELOPE_TYP)
                .put("cty", SEALED_TYP);
        JWSObjectJSON outer = new JWSObjectJSON(new Payload(Json.canonical(Json.MAPPER.valueToTree(jwe.toGeneralJSONObject()))));
        try {
            outer.sign(CompactJws.header(Base64Url.encode(Json.write(outerHeader))), signer.signer());
        } catch (JOSEException e) {
            throw new IllegalStateException("Ed25519 signing failed", e);
        }
        return Json.canonicalText(Json.MAPPER.valueToTree(outer.toFlattenedJSONObject()));
    }

    /**
     * The general JSON JWE of `plaintext` to each recipient under one content key: Nimbus's X25519Encrypter
     * per recipient with that shared key (ECDH-ES with a fresh ephemeral key, the Concat KDF, AES key wrap),
     * the content encrypted by the first (A256GCM, the AAD being the protected header as Nimbus holds it
     * from `header`'s base64url). Nimbus's MultiEncrypter would do this, but for a single recipient it
     * leaves out the recipient's header (alg, kid, epk), and replies go to one agency.
     */
    private static JWEObjectJSON encrypt(JWEHeader header, byte[] plaintext, Collection<AgencyKey> recipients)
            throws JOSEException, GeneralSecurityException, ParseException {
        KeyGenerator generator = KeyGenerator.getInstance("AES");
        generator.init(256);
        SecretKey cek = generator.generateKey();
        byte[] aad = header.toBase64URL().toString().getBytes(StandardCharsets.US_ASCII);
        List<JWEObjectJSON.Recipient> entries = new ArrayList<>();
        JWECryptoParts content = null;
        for (AgencyKey recipient : recipients) {
            JWEHeader keyed = new JWEHeader.Builder(JWEAlgorithm.ECDH_ES_A256KW, EncryptionMethod.A256GCM)
                    .keyID(recipient.kid()).build();
            // The content once; the other recipients only need the content key wrapped.
            JWECryptoParts parts = new X25519Encrypter(recipient.jwk(), cek)
                    .encrypt(keyed, content == null ? plaintext : new byte[0], aad);
            content = content == null ? parts : content;
            UnprotectedHeader entry = new UnprotectedHeader.Builder()
                    .param("alg", KEY_WRAP_ALG).keyID(recipient.kid())
                    .param("epk", parts.getHeader().getEphemeralPublicKey().toJSONObject()).build();
            entries.add(new JWEObjectJSON.Recipient(entry, parts.getEncryptedKey()));
        }
        return new JWEObjectJSON(header, content.getCipherText(), content.getInitializationVector(),
                content.getAuthenticationTag(), entries, null, null);
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
        Base64Url.decode(outer.get("signature").asText());
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
        return new Parsed(raw, outerHeader, jwe, routing);
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
        JWSObject signed;
        try {
            signed = JWSObjectJSON.parse(envelope.raw()).getSignatures().get(0).toJWSObject();
        } catch (ParseException e) {
            throw new EnvelopeException("bad_signature", "the outer JWS header is not one Nimbus reads: " + e.getMessage());
        }
        if (!CompactJws.verifies(signer, signed)) {
            throw new EnvelopeException("bad_signature", "outer signature does not verify");
        }
    }

    /**
     * Steps 4-9 of §5. `signerKey(kid)` is the sender's signing key from the directory as of `sent_at`
     * (or throws EnvelopeException: unknown_key, key_revoked, key_not_valid); `myKeys` every X25519 key we hold.
     */
    public static Opened open(Parsed envelope, Map<String, OctetKeyPair> myKeys, Function<String, AgencyKey> signerKey) {
        verifyOuter(envelope, signerKey.apply(envelope.kid()));
        JsonNode entries = envelope.jwe().get("recipients");
        int index = 0;
        while (index < entries.size() && !myKeys.containsKey(entries.get(index).get("header").path("kid").asText())) {
            index++;
        }
        if (index == entries.size()) {
            throw new EnvelopeException("not_a_recipient", "none of the envelope's recipient keys is ours");
        }
        String inner = decrypt(envelope, index, myKeys.get(entries.get(index).get("header").get("kid").asText()));

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

    /**
     * Step 6 with Nimbus's X25519Decrypter on our entry: ECDH-ES, the Concat KDF, AES key unwrap and
     * A256GCM, with the AAD Nimbus keeps from the received `protected` string. Nimbus's MultiDecrypter is
     * not used: with a single entry it would look for `alg` and `epk` in the protected header only.
     */
    private static String decrypt(Parsed envelope, int index, OctetKeyPair mine) {
        ObjectNode jwe = envelope.jwe();
        if (jwe.has("aad") || jwe.has("unprotected")) {
            throw new EnvelopeException("undecryptable", "the JWE has aad or an unprotected header; we use neither");
        }
        ObjectNode header = (ObjectNode) jwe.get("recipients").get(index).get("header");
        if (!onlyMembers(envelope.routing(), JWE_HEADER) || !onlyMembers(header, RECIPIENT_HEADER)) {
            throw new EnvelopeException("undecryptable", "the JWE has a header parameter we do not understand (e.g. zip)");
        }
        try {
            // Nimbus reads the JWE text as received: its header keeps the `protected` string, the AAD.
            JWEObjectJSON sealed = JWEObjectJSON.parse(Json.write(jwe));
            OctetKeyPair epk = Okp.publicKey(header.path("epk"));
            if (!Okp.X25519.equals(epk.getCurve().getName()) || sealed.getIV().decode().length != 12
                    || sealed.getAuthTag().decode().length != 16) {
                throw new EnvelopeException("undecryptable", "epk is not an X25519 key, or a wrong IV or tag length");
            }
            JWEObjectJSON.Recipient entry = sealed.getRecipients().get(index);
            JWEHeader joined = (JWEHeader) sealed.getHeader().join(entry.getUnprotectedHeader());
            byte[] plaintext = new X25519Decrypter(mine).decrypt(joined, entry.getEncryptedKey(), sealed.getIV(),
                    sealed.getCipherText(), sealed.getAuthTag(), sealed.getAAD());
            if (plaintext.length == 0) {
                throw new EnvelopeException("undecryptable", "the envelope has no content");
            }
            return new String(plaintext, StandardCharsets.US_ASCII);
        } catch (JOSEException | ParseException | RuntimeException e) {
            throw new EnvelopeException("undecryptable", "the envelope does not decrypt with our key");
        }
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
