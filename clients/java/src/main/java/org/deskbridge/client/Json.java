package org.deskbridge.client;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import org.erdtman.jcs.JsonCanonicalizer;

/** JSON in and out: one strict mapper, and RFC 8785 canonical JSON (JCS) for what gets signed. */
public final class Json {
    public static final ObjectMapper MAPPER = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    static {
        // An envelope is at most 2 MiB, a signed directory can be larger; the defaults are 20 MB anyway.
        MAPPER.getFactory().setStreamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(64).build());
    }

    private Json() {}

    /** A JSON object from UTF-8 bytes, or `malformed` naming `what`. */
    public static ObjectNode object(byte[] data, String what) {
        return object(new String(data, StandardCharsets.UTF_8), what);
    }

    public static ObjectNode object(String text, String what) {
        JsonNode node;
        try {
            node = MAPPER.readTree(text);
        } catch (IOException e) {
            throw new EnvelopeException("malformed", what + " is not JSON");
        }
        if (node == null || !node.isObject()) {
            throw new EnvelopeException("malformed", what + " is not a JSON object");
        }
        return (ObjectNode) node;
    }

    /** Compact JSON text, members in insertion order (for headers whose bytes we choose). */
    public static String write(JsonNode node) {
        try {
            return MAPPER.writeValueAsString(node);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** RFC 8785 canonical JSON, UTF-8: the bytes a signature covers (docs/envelope.md §3). */
    public static byte[] canonical(JsonNode node) {
        try {
            return new JsonCanonicalizer(write(node)).getEncodedUTF8();
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot canonicalize: " + e.getMessage(), e);
        }
    }

    public static String canonicalText(JsonNode node) {
        return new String(canonical(node), StandardCharsets.UTF_8);
    }
}
