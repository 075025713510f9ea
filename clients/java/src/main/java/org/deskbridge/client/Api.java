package org.deskbridge.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.launchdarkly.eventsource.ConnectStrategy;
import com.launchdarkly.eventsource.ErrorStrategy;
import com.launchdarkly.eventsource.EventSource;
import com.launchdarkly.eventsource.HttpConnectStrategy;
import com.launchdarkly.eventsource.MessageEvent;
import com.launchdarkly.eventsource.StreamException;
import com.launchdarkly.eventsource.StreamHttpErrorException;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * The gateway's HTTP API as a partner uses it, over java.net.http with a bearer credential. A refusal
 * keeps the server's problem `code` (RFC 9457), so callers see the same codes as docs/errors.md lists.
 */
public final class Api {
    // HTTP/1.1: over cleartext the JDK would otherwise offer an h2c upgrade, which uvicorn refuses on a POST.
    private final HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10)).build();
    private final URI base;
    private final String credential;
    private final RequestSigner signer;

    /** Authenticates with a bearer `credential`, or, when `signer` is given, with RFC 9421 signatures. */
    public Api(String server, String credential, RequestSigner signer) {
        this.base = URI.create(server.endsWith("/") ? server : server + "/");
        this.credential = credential;
        this.signer = signer;
    }

    private Map<String, String> authentication(String method, URI target, byte[] body) {
        return signer != null ? signer.sign(method, target, body, Instant.now())
                : Map.of("Authorization", "Bearer " + credential);
    }

    /** The directory, verified against the pinned key: nothing unverified from the server is used. */
    public Directory directory(AgencyKey pin) {
        return Directory.verify(call("GET", "v1/directory", null, 30), pin, Instant.now());
    }

    /** One page of the inbox after `cursor` (null: from the start); `waitSeconds` > 0 long-polls. */
    public JsonNode inbox(String cursor, int waitSeconds) {
        StringBuilder path = new StringBuilder("v1/inbox?limit=100");
        if (cursor != null) {
            path.append("&after=").append(URLEncoder.encode(cursor, StandardCharsets.UTF_8));
        }
        if (waitSeconds > 0) {
            path.append("&wait=").append(waitSeconds);
        }
        return call("GET", path.toString(), null, 30 + waitSeconds);
    }

    public JsonNode acknowledge(String noticeId, String receipt) {
        ObjectNode body = Json.MAPPER.createObjectNode().put("receipt", receipt);
        return call("POST", "v1/inbox/" + noticeId + "/ack", Json.write(body), 30);
    }

    /**
     * The inbox as Server-Sent Events (`GET /v1/inbox/stream`), from the start: each `notice` event's item
     * to `each`, until interrupted. A dropped connection is resumed with Last-Event-ID (the cursor), so
     * nothing is missed or repeated; a refusal by the server (4xx) ends it.
     */
    public void stream(Consumer<JsonNode> each) {
        // Signed anew on every (re)connection: a signature's nonce is good once.
        HttpConnectStrategy connect = ConnectStrategy.http(base.resolve("v1/inbox/stream"))
                .requestTransformer(request -> {
                    okhttp3.Request.Builder signed = request.newBuilder();
                    authentication("GET", request.url().uri(), new byte[0]).forEach(signed::header);
                    return signed.build();
                })
                .readTimeout(2, TimeUnit.MINUTES); // the gateway sends a keep-alive comment every few seconds
        ErrorStrategy onError = new ErrorStrategy() {
            @Override
            public Result apply(StreamException error) {
                boolean refused = error instanceof StreamHttpErrorException http && http.getCode() < 500;
                return new Result(refused ? Action.THROW : Action.CONTINUE, this);
            }
        };
        try (EventSource events = new EventSource.Builder(connect).errorStrategy(onError).build()) {
            while (true) {
                MessageEvent event = events.readMessage();
                if ("notice".equals(event.getEventName())) {
                    each.accept(Json.object(event.getData(), "streamed inbox item"));
                }
            }
        } catch (StreamHttpErrorException e) {
            throw new EnvelopeException("client_error", "GET /v1/inbox/stream failed with " + e.getCode());
        } catch (StreamException e) {
            throw new EnvelopeException("client_error", "the inbox stream ended: " + e);
        }
    }

    /** Posts a sealed envelope exactly as sealed (the body bytes are what is hashed and carried). */
    public JsonNode submit(String envelope) {
        return call("POST", "v1/envelopes", envelope, 30);
    }

    private JsonNode call(String method, String path, String body, int timeoutSeconds) {
        URI target = base.resolve(path);
        byte[] bytes = body == null ? new byte[0] : body.getBytes(StandardCharsets.UTF_8);
        HttpRequest.Builder request = HttpRequest.newBuilder(target)
                .timeout(Duration.ofSeconds(timeoutSeconds))
                .header("Accept", "application/json");
        authentication(method, target, bytes).forEach(request::header);
        if (body != null) {
            request.header("Content-Type", "application/json")
                    .method(method, HttpRequest.BodyPublishers.ofByteArray(bytes));
        } else {
            request.method(method, HttpRequest.BodyPublishers.noBody());
        }
        HttpResponse<String> response;
        try {
            response = http.send(request.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new EnvelopeException("client_error", "cannot reach " + base + ": " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new EnvelopeException("client_error", "interrupted");
        }
        if (response.statusCode() >= 400) {
            String code = "client_error";
            String detail = response.body().length() > 200 ? response.body().substring(0, 200) : response.body();
            try {
                JsonNode problem = Json.MAPPER.readTree(response.body());
                if (problem != null && problem.path("code").isTextual()) {
                    code = problem.get("code").asText();
                }
                if (problem != null && problem.has("detail")) {
                    detail = problem.get("detail").isTextual() ? problem.get("detail").asText() : problem.get("detail").toString();
                }
            } catch (IOException e) {
                // not problem details: keep the start of the body
            }
            throw new EnvelopeException(code, method + " /" + path.split("\\?")[0] + " failed with "
                    + response.statusCode() + ": " + detail);
        }
        try {
            return Json.MAPPER.readTree(response.body());
        } catch (IOException e) {
            throw new EnvelopeException("client_error", method + " /" + path + " answered something not JSON");
        }
    }
}
