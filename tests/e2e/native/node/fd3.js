// A Node.js HTTP server that takes its listener from LISTEN_FDS (fd 3) instead of binding
// a port, and on SIGTERM stops accepting, lets the requests in flight finish and exits.
'use strict';
const http = require('http');

if (process.env.LISTEN_FDS !== '1') {
  console.error('expected one listener in LISTEN_FDS');
  process.exit(2);
}
const server = http.createServer((req, res) => {
  res.end(`node pid=${process.pid}\n`);
});
server.listen({ fd: 3 });
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
