// Reference Socket.IO server (the npm `socket.io` package) for lifeline's socketio tests.
//
// Usage: node server.js [port]       (port 0 or absent: any free port)
// Prints `listening <port>` on stdout once ready.
//
// Environment:
//   PING_INTERVAL, PING_TIMEOUT  Engine.IO timings in ms (defaults 25000 / 20000)
//   TOKEN                        if set, a connection must carry auth.token === TOKEN
//                                (in the CONNECT packet's auth JSON), else CONNECT_ERROR
//   TOKENS                       comma-separated answers of POST /token, one per fetch
//                                (the last one repeats); default: TOKEN
//   SIO_PATH                     Socket.IO path (default /socket.io/)
//   HOST                         address to listen on (default 127.0.0.1)
//
// Namespaces `/` and `/admin` behave the same. Event `echo` acknowledges with
// {echo: <data>, nsp: <namespace>}.
//
// Control endpoints (plain HTTP on the same port):
//   GET  /control/state          {"clients": n, "fetches": n, "last": {auth, authorization}}
//   POST /control/disconnect     server-side disconnect of every socket (`41` packet)
//   POST /control/close          close every Engine.IO connection (WebSocket close, no `41`)
//   POST /token                  {"access_token": ..., "expires_in": 60}
'use strict';

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 0);
const env = process.env;
const TOKEN = env.TOKEN || '';
const TOKENS = (env.TOKENS || TOKEN).split(',');
let fetches = 0;
let last = null;

const httpServer = http.createServer((req, res) => {
  const send = (code, obj) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  if (req.url === '/control/state') {
    return send(200, { clients: io.engine.clientsCount, fetches, last });
  }
  if (req.method === 'POST' && req.url === '/control/disconnect') {
    for (const nsp of ['/', '/admin']) io.of(nsp).disconnectSockets(false);
    return send(200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/control/close') {
    // Engine.IO level: a WebSocket close with no Socket.IO DISCONNECT packet first.
    for (const c of Object.values(io.engine.clients)) c.close();
    return send(200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/token') {
    const tok = TOKENS[Math.min(fetches, TOKENS.length - 1)];
    fetches += 1;
    return send(200, { access_token: tok, expires_in: 60 });
  }
  send(404, { error: 'not found' });
});

const io = new Server(httpServer, {
  path: env.SIO_PATH || '/socket.io/',
  pingInterval: Number(env.PING_INTERVAL || 25000),
  pingTimeout: Number(env.PING_TIMEOUT || 20000),
  maxHttpBufferSize: 1e6,
});

function setup(nsp) {
  nsp.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    last = { auth, authorization: socket.handshake.headers.authorization || null, nsp: nsp.name };
    if (TOKEN && auth.token !== TOKEN) {
      const err = new Error('unauthorized');
      err.data = { reason: 'bad token' };
      return next(err);
    }
    next();
  });
  nsp.on('connection', (socket) => {
    socket.on('echo', (...args) => {
      const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      if (ack) ack({ echo: args.length > 0 ? args[0] : null, nsp: nsp.name });
    });
  });
}
setup(io.of('/'));
setup(io.of('/admin'));

httpServer.listen(port, env.HOST || '127.0.0.1', () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
