package org.deskbridge.client;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Instant;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * HTTP Message Signatures (RFC 9421) as deskbridge takes them (docs/trust.md): the agency signs each
 * request with its own Ed25519 key instead of sending its credential. Label `sig1`, covering
 * `("@method" "@target-uri" "content-digest")` (RFC 9530 `sha-256`, also of an empty body) with
 * `created`, `keyid` (the key's kid), a random `nonce` and `alg="ed25519"`.
 */
public final class RequestSigner {
    private static final SecureRandom RANDOM = new SecureRandom();
    private final AgencyKeys keys;

    public RequestSigner(AgencyKeys keys) {
        this.keys = keys;
    }

    /** The header fields that sign this request: Content-Digest, Signature-Input and Signature. */
    public Map<String, String> sign(String method, URI target, byte[] body, Instant now) {
        byte[] nonceBytes = new byte[16];
        RANDOM.nextBytes(nonceBytes);
        String digest = "sha-256=:" + Base64.getEncoder().encodeToString(Okp.sha256(body)) + ":";
        String params = "(\"@method\" \"@target-uri\" \"content-digest\");created=" + now.getEpochSecond()
                + ";keyid=\"" + keys.signingKid() + "\";nonce=\"" + Base64Url.encode(nonceBytes) + "\";alg=\"ed25519\"";
        String base = "\"@method\": " + method + "\n"
                + "\"@target-uri\": " + target + "\n"
                + "\"content-digest\": " + digest + "\n"
                + "\"@signature-params\": " + params;
        byte[] signature = keys.sign(base.getBytes(StandardCharsets.UTF_8));
        Map<String, String> fields = new LinkedHashMap<>();
        fields.put("Content-Digest", digest);
        fields.put("Signature-Input", "sig1=" + params);
        fields.put("Signature", "sig1=:" + Base64.getEncoder().encodeToString(signature) + ":");
        return fields;
    }
}
