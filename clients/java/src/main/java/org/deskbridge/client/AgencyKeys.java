package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.JWSSigner;
import com.nimbusds.jose.crypto.Ed25519Signer;
import com.nimbusds.jose.jwk.OctetKeyPair;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
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
    private final OctetKeyPair signing;
    private final String signingKid;
    private final Map<String, OctetKeyPair> decryption;

    private AgencyKeys(String agency, OctetKeyPair signing, String signingKid, Map<String, OctetKeyPair> decryption) {
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
        OctetKeyPair signing = null;
        String signingKid = null;
        Map<String, OctetKeyPair> decryption = new LinkedHashMap<>();
        for (JsonNode jwk : jwks.path("keys")) {
            String crv = jwk.path("crv").asText();
            OctetKeyPair key = Okp.privateKey(jwk);
            String kid = Okp.thumbprint(key);
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
    public Map<String, OctetKeyPair> decryptionKeys() {
        return decryption;
    }

    /** Nimbus's Ed25519 signer with the current signing key, for the JWSs this agency signs. */
    JWSSigner signer() {
        try {
            return new Ed25519Signer(signing);
        } catch (JOSEException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A raw Ed25519 signature over `message` (RFC 9421 request signatures), made by Nimbus's signer. */
    public byte[] sign(byte[] message) {
        try {
            return signer().sign(new JWSHeader(JWSAlgorithm.Ed25519), message).decode();
        } catch (JOSEException e) {
            throw new IllegalStateException("Ed25519 signing failed", e);
        }
    }

    @Override
    public String toString() {
        return "AgencyKeys[" + agency + ", sig " + signingKid + "]";
    }
}
