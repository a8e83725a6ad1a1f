// WebSocket test peer (the npm `ws` package) for lifeline's chaos tests: a separate
// process the tests SIGKILL and start again on the same address.
//
// `ws` is not installed here: it comes with socket.io (a dependency of engine.io, pinned
// by tests/peers/socketio/package-lock.json; scripts/test-deps/socketio.sh installs it),
// so it is looked up in this directory first, then in ../socketio.
//
// Usage: HOST=<address> PORT=<port> node server.js   (PORT 0 or absent: any free port)
// Prints `listening <port>` on stdout once ready.
//
// Behaviour: every path accepts a WebSocket upgrade; pings are answered with a pong
// carrying the same payload (done by `ws` itself, RFC 6455 section 5.5.3); text and
// binary messages are echoed back unchanged.
//
// Control endpoint (plain HTTP on the same port):
//   GET /control/state   {"clients": n}  (open WebSocket connections, the server's own list)
'use strict';

const http = require('http');
const path = require('path');

const wsPath = require.resolve('ws', { paths: [__dirname, path.join(__dirname, '../socketio')] });
const { WebSocketServer } = require(wsPath);

const env = process.env;
const port = Number(env.PORT || 0);

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/control/state') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ clients: wss.clients.size }));
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: 'not found' }));
});

const wss = new WebSocketServer({ server, maxPayload: 1 << 20 });
wss.on('connection', (ws) => {
  // A broken frame from the client closes that connection only.
  ws.on('error', () => ws.terminate());
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.listen(port, env.HOST || '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
