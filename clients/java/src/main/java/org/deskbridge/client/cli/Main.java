package org.deskbridge.client.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import org.deskbridge.client.Directory;
import org.deskbridge.client.EnvelopeException;
import org.deskbridge.client.Json;
import org.deskbridge.client.Partner;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;
import picocli.CommandLine.Spec;

/** `deskbridge-partner`: the partner CLI contract (the same commands, output and exit codes in every language). */
@Command(name = "deskbridge-partner", mixinStandardHelpOptions = true, version = "deskbridge-partner 0.1.0",
        description = "A partner agency's deskbridge client: directory, inbox, replies and notices.",
        subcommands = {Main.DirectoryCommand.class, Main.InboxCommand.class, Main.ReplyCommand.class,
                Main.NoticeCommand.class})
public final class Main implements Runnable {
    static final int FAILED = 1;
    static final int REFUSED_SOME = 3;
    static final int FOLLOW_WAIT_S = 30;
    /** The reader of our output left (`... | head`): stop quietly, as a shell's 128 + SIGPIPE. */
    static final int READER_LEFT = 141;

    @Spec
    CommandSpec spec;

    @Option(names = "--server", description = "Gateway URL (env DESKBRIDGE_SERVER, else http://127.0.0.1:8000).")
    String server = envOr("DESKBRIDGE_SERVER", "http://127.0.0.1:8000");

    @Option(names = "--home", description = "Identity folders (env DESKBRIDGE_HOME, else ~/.deskbridge).")
    Path home = Path.of(envOr("DESKBRIDGE_HOME", System.getProperty("user.home") + "/.deskbridge"));

    @Option(names = "--as", required = true, description = "The agency to act as.")
    String agency;

    @Option(names = "--sign", description = "Sign each request with the agency's own key (RFC 9421) instead of "
            + "sending its credential.")
    boolean sign;

    public static void main(String[] args) {
        System.exit(run(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** Runs one command line; the exit status. */
    public static int run(String[] args, PrintWriter out, PrintWriter err) {
        CommandLine cli = new CommandLine(new Main());
        cli.setOut(out).setErr(err);
        cli.setExecutionExceptionHandler((exception, commandLine, parsed) -> {
            if (exception instanceof ReaderLeft) {
                return READER_LEFT;
            }
            if (exception instanceof EnvelopeException e) {
                err.println("error: " + e.code() + ": " + oneLine(e.detail()));
                return FAILED;
            }
            err.println("error: client_error: " + oneLine(String.valueOf(exception)));
            return FAILED;
        });
        return cli.execute(args);
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "Missing required subcommand");
    }

    Partner partner() {
        return new Partner(server, home, agency, sign);
    }

    static String oneLine(String text) {
        return text == null ? "" : text.replaceAll("\\s+", " ").strip();
    }

    private static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    /** Standard output is gone: nothing more is read, so nothing more is pulled or acknowledged. */
    static final class ReaderLeft extends RuntimeException {
        private static final long serialVersionUID = 1L;
    }

    static void checkReader(PrintWriter out) {
        if (out.checkError()) {
            throw new ReaderLeft();
        }
    }

    /** Parent commands that do nothing alone: a usage error (exit 2). */
    abstract static class Group implements Runnable {
        @Spec
        CommandSpec spec;

        @Override
        public void run() {
            throw new CommandLine.ParameterException(spec.commandLine(), "Missing required subcommand");
        }
    }

    @Command(name = "directory", description = "The signed directory.", subcommands = DirectoryShow.class)
    static final class DirectoryCommand extends Group {
        @ParentCommand
        Main main;
    }

    @Command(name = "show", description = "Agencies and their keys, from the directory verified against the pin.")
    static final class DirectoryShow implements Callable<Integer> {
        @ParentCommand
        DirectoryCommand parent;

        @Spec
        CommandSpec spec;

        @Override
        public Integer call() {
            Directory directory = parent.main.partner().directory();
            PrintWriter out = spec.commandLine().getOut();
            for (Directory.Agency agency : directory.agencies()) {
                out.println(agency.id() + " " + agency.kind() + " " + agency.name());
                for (Directory.Key key : agency.keys()) {
                    out.println("  " + key.use() + " " + key.key().kid() + " " + key.status());
                }
            }
            return 0;
        }
    }

    @Command(name = "inbox", description = "Your agency's inbox.", subcommands = InboxPull.class)
    static final class InboxCommand extends Group {
        @ParentCommand
        Main main;
    }

    @Command(name = "pull", description = "Open, verify and acknowledge every notice in the inbox.")
    static final class InboxPull implements Callable<Integer> {
        @ParentCommand
        InboxCommand parent;

        @Spec
        CommandSpec spec;

        @Option(names = "--follow", description = "Then keep long-polling for new notices until interrupted.")
        boolean follow;

        @Option(names = "--stream", description = "Like --follow, over Server-Sent Events (GET /v1/inbox/stream).")
        boolean stream;

        @Option(names = "--no-ack", description = "Do not acknowledge.")
        boolean noAck;

        @Option(names = "--json", description = "One JSON object per opened notice.")
        boolean json;

        @Override
        public Integer call() {
            Partner partner = parent.main.partner();
            PrintWriter out = spec.commandLine().getOut();
            PrintWriter err = spec.commandLine().getErr();
            int[] counts = new int[2]; // opened, refused
            Consumer<JsonNode> each = item -> {
                String state = item.path("state").asText();
                if (state.equals("acknowledged") || state.equals("recalled")) {
                    return;
                }
                Partner.Received received;
                try {
                    received = partner.open(item);
                } catch (EnvelopeException e) {
                    err.println("refused " + item.path("notice_id").asText() + ": " + e.code() + ": " + oneLine(e.detail()));
                    counts[1]++;
                    return;
                }
                counts[0]++;
                checkReader(out);
                if (!noAck) {
                    partner.acknowledge(received);
                }
                print(out, received, !noAck);
                checkReader(out);
            };
            if (stream) {
                partner.stream(each);
            } else {
                partner.pull(follow, FOLLOW_WAIT_S, each);
            }
            if (!json) {
                out.println(counts[0] + " notice(s) opened" + (counts[1] > 0 ? ", " + counts[1] + " refused" : ""));
            }
            return counts[1] > 0 ? REFUSED_SOME : 0;
        }

        private void print(PrintWriter out, Partner.Received received, boolean acknowledged) {
            JsonNode notice = received.opened().notice();
            if (json) {
                ObjectNode line = Json.MAPPER.createObjectNode();
                line.put("cursor", received.cursor());
                line.set("notice", notice);
                line.put("verified_by", received.opened().signer());
                line.put("acknowledged", acknowledged);
                out.println(Json.write(line));
                return;
            }
            out.println("[" + notice.get("priority").asText().toUpperCase(Locale.ROOT) + "] "
                    + notice.get("type").asText() + " " + notice.get("case_ref").asText() + " from "
                    + notice.get("sender").asText() + " (TLP:" + notice.get("tlp").asText().toUpperCase(Locale.ROOT)
                    + ") id " + notice.get("notice_id").asText());
            out.println("  " + notice.get("summary").asText());
            out.println("  signature verified: " + received.opened().signer());
            if (acknowledged) {
                out.println("  acknowledged");
            }
        }
    }

    @Command(name = "reply", description = "Seal a reply to a notice in your inbox and send it to its sender.")
    static final class ReplyCommand implements Callable<Integer> {
        @ParentCommand
        Main main;

        @Spec
        CommandSpec spec;

        @Option(names = "--to", required = true, description = "The notice_id answered.")
        String to;

        @Option(names = "--summary", required = true)
        String summary;

        @Option(names = "--details")
        String details;

        @Override
        public Integer call() {
            Partner partner = main.partner();
            Partner.Received original = partner.open(partner.find(to));
            JsonNode accepted = partner.send(partner.reply(original, summary, details));
            printId(spec, accepted);
            return 0;
        }
    }

    @Command(name = "notice", description = "Notices you send.", subcommands = NoticeSend.class)
    static final class NoticeCommand extends Group {
        @ParentCommand
        Main main;
    }

    @Command(name = "send", description = "Seal a new notice from a draft and send it.")
    static final class NoticeSend implements Callable<Integer> {
        @ParentCommand
        NoticeCommand parent;

        @Spec
        CommandSpec spec;

        @Option(names = "--file", required = true, description = "The draft (schemas/json/notice-draft.schema.json).")
        Path file;

        @Override
        public Integer call() {
            JsonNode draft;
            try {
                draft = Json.MAPPER.readTree(Files.readString(file));
            } catch (IOException e) {
                throw new EnvelopeException("invalid_request", "cannot read the draft " + file + ": " + e.getMessage());
            }
            Partner partner = parent.main.partner();
            printId(spec, partner.send(partner.fromDraft(draft)));
            return 0;
        }
    }

    static void printId(CommandSpec spec, JsonNode accepted) {
        ObjectNode line = Json.MAPPER.createObjectNode();
        line.set("notice_id", accepted.get("notice_id"));
        spec.commandLine().getOut().println(Json.write(line));
    }
}
