/**
 * A TCP relay for tests, run as its own process (`deno run -A tests/helpers/tcp_relay.ts LISTEN_HOST
 * LISTEN_PORT TARGET_HOST TARGET_PORT`): accepts on the listen address and splices each connection to the
 * target. Prints `listening PORT` once bound. Used to reach a test cluster's apiserver (bound to the
 * loopback of its network namespace) from the root namespace, as a host cluster's API would be reached.
 * @module
 */

import net from "node:net";

if (import.meta.main) {
  const [host, port, targetHost, targetPort] = Deno.args;
  if (!host || !port || !targetHost || !targetPort) {
    throw new Error("usage: tcp_relay.ts HOST PORT THOST TPORT");
  }
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ host: targetHost, port: Number(targetPort), allowHalfOpen: true });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });
  server.listen(Number(port), host, () => {
    const addr = server.address() as net.AddressInfo;
    Deno.stdout.writeSync(new TextEncoder().encode(`listening ${addr.port}\n`));
  });
}
