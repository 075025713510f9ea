// The inbox's event stream (GET /v1/inbox/stream) read through a stand-in gateway that splits events
// across chunks, even between CR and LF, mixes in keep-alive comments and escalation reminders, and drops
// the connection: every notice arrives once, in order, the reconnection resuming from Last-Event-ID.

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import { describe, expect, it } from "vitest";

import { PartnerApi } from "../src/api.js";

const item = (cursor: string) => ({ notice_id: `id-${cursor}`, cursor, state: "delivered", envelope: "{}" });
const event = (cursor: string) => `event: notice\r\nid: ${cursor}\r\ndata: ${JSON.stringify(item(cursor))}\r\n\r\n`;

describe("the inbox stream", () => {
  it("yields each notice once, across split chunks and a dropped connection", async () => {
    const resumedFrom: (string | undefined)[] = [];
    const server = createServer((request, response) => {
      expect(request.url).toBe("/v1/inbox/stream");
      expect(request.headers.authorization).toBe("Bearer dbp_x");
      const last = request.headers["last-event-id"] as string | undefined;
      resumedFrom.push(last);
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      if (last === undefined) {
        const text = `: ping\r\n\r\n${event("c1")}event: escalation\r\ndata: {"overdue":1}\r\n\r\n${event("c2")}`;
        const cuts = [5, 20, text.indexOf("\r\n", 40) + 1, text.length - 3];
        let from = 0;
        for (const cut of cuts) {
          response.write(text.slice(from, cut));
          from = cut;
        }
        response.end(text.slice(from)); // the connection drops
      } else response.write(event("c3")); // and stays open
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const api = new PartnerApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
      credential: "dbp_x",
    });
    const seen: string[] = [];
    for await (const got of api.stream()) {
      seen.push(got.cursor);
      if (seen.length === 3) break;
    }
    server.closeAllConnections();
    server.close();
    expect(seen).toEqual(["c1", "c2", "c3"]);
    expect(resumedFrom).toEqual([undefined, "c2"]);
  });
});
