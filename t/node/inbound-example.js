// The inbound-source example from hookstream's docs, as written: connect
// with ?token=, send an event, print the ack's event_id.
// Usage: node inbound-example.js ws://127.0.0.1:PORT SRC KEY

const WebSocket = require("ws");

const [base, sourceId, apiKey] = process.argv.slice(2);

const ws = new WebSocket(`${base}/v1/ws/source/${sourceId}?token=${apiKey}`);

const timer = setTimeout(() => {
  console.error("no ack within 5 seconds");
  process.exit(2);
}, 5000);

ws.on("open", () => {
  ws.send(JSON.stringify({
    type: "order.created",
    data: { order_id: "ord_123", amount: 4200, currency: "usd" },
  }));
});

ws.on("message", (raw) => {
  const ack = JSON.parse(raw);
  if (ack.type !== "ack") {
    console.error("unexpected message:", raw.toString());
    process.exit(1);
  }
  console.log(ack.event_id);
  clearTimeout(timer);
  ws.close();
});

ws.on("error", (err) => {
  console.error(err.message);
  process.exit(1);
});
