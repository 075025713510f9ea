package org.deskbridge.client;

import com.fasterxml.jackson.databind.node.ObjectNode;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.JWSObject;
import com.nimbusds.jose.Payload;
import com.nimbusds.jose.crypto.Ed25519Verifier;
import com.nimbusds.jose.util.Base64URL;
import java.text.ParseException;
import java.util.Set;
import java.util.function.Function;

/**
 * Compact JWS (RFC 7515 §7.1) with Ed25519 through Nimbus's {@link JWSObject}, {@code Ed25519Signer} and
 * {@link Ed25519Verifier}: the inner notice signature, receipts, the signed directory. Around Nimbus: the
 * header bytes are written here (Nimbus would order its members as a hash map does, and the inner JWS of
 * a notice is byte for byte the published one), and on input canonical base64url, a closed header and the
 * accepted algorithms are checked before Nimbus verifies.
 */
public final class CompactJws {
    /** Emitted (RFC 9864); `EdDSA` (RFC 8037) with an Ed25519 key is read from older libraries. */
    public static final String ED25519 = "Ed25519";
    public static final Set<String> ED25519_OR_LEGACY = Set.of("Ed25519", "EdDSA");
    private static final Set<String> HEADER_MEMBERS = Set.of("alg", "kid", "typ", "cty");

    private CompactJws() {}

    /** A compact JWS over `payload` with the header {alg, kid, typ[, cty]} in that order. */
    public static String sign(byte[] payload, AgencyKeys signer, String typ, String cty) {
        ObjectNode header = Json.MAPPER.createObjectNode();
        header.put("alg", ED25519).put("kid", signer.signingKid()).put("typ", typ);
        if (cty != null) {
            header.put("cty", cty);
        }
        JWSObject jws = new JWSObject(header(Base64Url.encode(Json.write(header))), new Payload(payload));
        try {
            jws.sign(signer.signer());
        } catch (JOSEException e) {
            throw new IllegalStateException("Ed25519 signing failed", e);
        }
        return jws.serialize();
    }

    /** A header Nimbus parsed from `protectedB64`, which it then signs over exactly as given. */
    static JWSHeader header(String protectedB64) {
        try {
            return JWSHeader.parse(new Base64URL(protectedB64));
        } catch (ParseException e) {
            throw new EnvelopeException("malformed", "a JWS header Nimbus does not read: " + e.getMessage());
        }
    }

    /** A compact JWS read by Nimbus, with its header as strict JSON for the checks Nimbus does not make. */
    public record Parts(ObjectNode header, JWSObject jws) {
        public String kid() {
            return header.path("kid").isTextual() ? header.get("kid").asText() : null;
        }
    }

    public static Parts read(String token) {
        String[] parts = token.split("\\.", -1);
        if (parts.length != 3) {
            throw new EnvelopeException("malformed", "not a compact JWS");
        }
        ObjectNode header = Json.object(Base64Url.decode(parts[0]), "JWS header");
        Base64Url.decode(parts[1]);
        Base64Url.decode(parts[2]);
        try {
            return new Parts(header, JWSObject.parse(token));
        } catch (ParseException e) {
            throw new EnvelopeException("malformed", "not a compact JWS: " + e.getMessage());
        }
    }

    /**
     * The payload once Nimbus shows the signature to be by the key `keyOf` gives for the header's kid.
     * `bad_signature` also for an algorithm outside `algorithms` or an unknown header parameter.
     */
    public static byte[] verify(Parts jws, Function<String, AgencyKey> keyOf, Set<String> algorithms) {
        String kid = jws.kid();
        if (kid == null || kid.isEmpty()) {
            throw new EnvelopeException("malformed", "the JWS header has no kid");
        }
        AgencyKey key = keyOf.apply(kid);
        if (!algorithms.contains(jws.header().path("alg").asText())) {
            throw new EnvelopeException("bad_signature", "signature algorithm " + jws.header().get("alg") + " is not accepted");
        }
        jws.header().fieldNames().forEachRemaining(name -> {
            if (!HEADER_MEMBERS.contains(name)) {
                throw new EnvelopeException("bad_signature", "unknown JWS header parameter " + name);
            }
        });
        if (!verifies(key, jws.jws())) {
            throw new EnvelopeException("bad_signature", "the signature does not verify with key " + key.kid());
        }
        return jws.jws().getPayload().toBytes();
    }

    /** Nimbus's Ed25519 verifier over a JWS as received; false also for a key that is not Ed25519. */
    static boolean verifies(AgencyKey key, JWSObject jws) {
        try {
            return Okp.ED25519.equals(key.crv()) && jws.verify(new Ed25519Verifier(key.jwk()));
        } catch (JOSEException | IllegalStateException e) {
            return false;
        }
    }
}
