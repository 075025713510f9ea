// The partner library: everything here runs on WebCrypto and fetch alone, in Node 20 and in a browser (the
// console imports it). The command line (commands.ts, cli.ts, home.ts) is Node's own and not exported here.

export * from "./api.js";
export * from "./directory.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./httpsig.js";
export * from "./inbox.js";
export * from "./keys.js";
export * from "./notice.js";
export * from "./receipt.js";
export * from "./seal.js";
export * from "./signed-directory.js";
