// The test stream as hookstream's docs show a client using it, with the
// ws package: prints "open", then the data of the first event as JSON.
//
//   node test-stream-client.js PORT SESSION_ID

'use strict';

const WebSocket = require('ws');

const [PORT, sessionId] = process.argv.slice(2);

const ws = new WebSocket(`ws://127.0.0.1:${PORT}/v1/ws/test/${sessionId}`);

ws.on('open', () => {
  console.log('open');
});

ws.on('message', (raw) => {
  const msg = JSON.parse(raw);

  if (msg.type === "event") {
    console.log(JSON.stringify({ channel: msg.channel, data: msg.data }));
    ws.close();
  }
});

ws.on('close', (code) => {
  console.log(`close ${code}`);
});

ws.on('error', (err) => {
  console.log(`error ${err.message}`);
  process.exitCode = 1;
});

setTimeout(() => {
  console.log('timeout');
  process.exit(1);
}, 15000).unref();
