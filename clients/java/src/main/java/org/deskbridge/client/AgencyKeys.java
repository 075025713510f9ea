package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.PrivateKey;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An agency's own private keys, as `keys.jwks.json` holds them ({"agency", "keys": [JWK with d, use]}): the
 * last `sig` key signs, and every `enc` key ever held decrypts (old notices are sealed to rotated keys).
 */
public final class AgencyKeys {
    public static final String KEYS_FILE = "keys.jwks.json";

    private final String agency;
    private final PrivateKey signing;
    private final String signingKid;
    private final Map<String, PrivateKey> decryption;

    private AgencyKeys(String agency, PrivateKey signing, String signingKid, Map<String, PrivateKey> decryption) {
        this.agency = agency;
        this.signing = signing;
        this.signingKid = signingKid;
        this.decryption = Collections.unmodifiableMap(decryption);
    }

    public static AgencyKeys load(Path folder) {
        Path path = folder.resolve(KEYS_FILE);
        try {
            JsonNode document = new ObjectMapper().readTree(Files.readString(path));
            return fromJwks(document.path("agency").asText(), document);
        } catch (NoSuchFileException e) {
            throw new EnvelopeException("key_file", "no key file at " + path);
        } catch (IOException | IllegalArgumentException e) {
            throw new EnvelopeException("key_file", path + " is not a deskbridge key file");
        }
    }

    /** From a JWKS with private parts ({"keys": [...]}), e.g. one agency of tests/vectors/keys.json. */
    public static AgencyKeys fromJwks(String agency, JsonNode jwks) {
        if (agency.isEmpty()) {
            throw new IllegalArgumentException("the key file names no agency");
        }
        PrivateKey signing = null;
        String signingKid = null;
        Map<String, PrivateKey> decryption = new LinkedHashMap<>();
        for (JsonNode jwk : jwks.path("keys")) {
            String crv = jwk.path("crv").asText();
            String x = jwk.path("x").asText();
            PrivateKey key = Okp.privateKey(crv, Base64Url.decode(jwk.path("d").asText()));
            String kid = Okp.thumbprint(crv, x);
            if ("sig".equals(jwk.path("use").asText()) && Okp.ED25519.equals(crv)) {
                signing = key;
                signingKid = kid;
            } else if ("enc".equals(jwk.path("use").asText()) && Okp.X25519.equals(crv)) {
                decryption.put(kid, key);
            }
        }
        if (signing == null || decryption.isEmpty()) {
            throw new IllegalArgumentException("a key file needs a sig and an enc key");
        }
        return new AgencyKeys(agency, signing, signingKid, decryption);
    }

    public String agency() {
        return agency;
    }

    public String signingKid() {
        return signingKid;
    }

    /** Every X25519 key this agency held, by kid. */
    public Map<String, PrivateKey> decryptionKeys() {
        return decryption;
    }

    /** A raw Ed25519 signature by the current signing key; the key itself never leaves this object. */
    public byte[] sign(byte[] message) {
        return Okp.sign(signing, message);
    }

    @Override
    public String toString() {
        return "AgencyKeys[" + agency + ", sig " + signingKid + "]";
    }
}
