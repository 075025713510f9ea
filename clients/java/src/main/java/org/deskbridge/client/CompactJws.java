package org.deskbridge.client;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.function.Function;

/** Compact JWS (RFC 7515 §7.1) with Ed25519: the inner notice signature, receipts, the signed directory. */
public final class CompactJws {
    /** Emitted; `EdDSA` (RFC 8037) with an Ed25519 key is read from older libraries. */
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
        String input = Base64Url.encode(Json.write(header)) + "." + Base64Url.encode(payload);
        return input + "." + Base64Url.encode(signer.sign(input.getBytes(StandardCharsets.US_ASCII)));
    }

    /** The three parts of a compact JWS with its header parsed, not yet verified. */
    public record Parts(ObjectNode header, String signingInput, byte[] payload, byte[] signature) {
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
        return new Parts(header, parts[0] + "." + parts[1], Base64Url.decode(parts[1]), Base64Url.decode(parts[2]));
    }

    /**
     * The payload once the signature is shown to be by the key `keyOf` gives for the header's kid.
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
        if (!Okp.ED25519.equals(key.crv())
                || !Okp.verify(key.key(), jws.signingInput().getBytes(StandardCharsets.US_ASCII), jws.signature())) {
            throw new EnvelopeException("bad_signature", "the signature does not verify with key " + key.kid());
        }
        return jws.payload();
    }
}
