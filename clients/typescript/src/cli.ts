// The executable of `deskbridge-partner` (bin/deskbridge-partner runs it): the exit status of the command.

import { main } from "./commands.js";

process.exitCode = await main(process.argv.slice(2));
