package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Seals a notice with the published test keys (tests/vectors/keys.json: `agencies.<id>.keys`) and prints
 * the envelope, so that deskbridge's own code can check what this client seals (tests/clients/). Test keys
 * only: a real identity seals through {@link Partner}, with keys from the verified directory.
 *
 * <p>{@code java -cp deskbridge-partner.jar org.deskbridge.client.TestKeysSeal KEYS.json NOTICE.json}
 */
public final class TestKeysSeal {
    private TestKeysSeal() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 2) {
            System.err.println("usage: TestKeysSeal KEYS.json NOTICE.json");
            System.exit(2);
        }
        JsonNode agencies = Json.MAPPER.readTree(Files.readString(Path.of(args[0]))).get("agencies");
        ObjectNode notice = Json.object(Files.readString(Path.of(args[1])), "notice");
        String sender = notice.get("sender").asText();
        List<AgencyKey> recipients = new ArrayList<>();
        for (JsonNode recipient : notice.get("recipients")) {
            for (JsonNode jwk : agencies.get(recipient.asText()).get("keys")) {
                if ("enc".equals(jwk.path("use").asText())) {
                    ObjectNode pub = jwk.deepCopy();
                    pub.remove("d");
                    recipients.add(AgencyKey.fromJwk(recipient.asText(), pub));
                }
            }
        }
        System.out.print(Envelope.seal(notice, AgencyKeys.fromJwks(sender, agencies.get(sender)), recipients));
    }
}
