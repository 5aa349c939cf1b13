/** The tunnel: WebSocket byte stream, SSH sessions on both sides, endpoints, control stream. @module */
export {
  type AgentSshOptions,
  AuthRefusedError,
  connectHub,
  type Endpoint,
  HostKeyMismatchError,
  HubSession,
} from "./agent_ssh.ts";
export {
  AgentAtCapError,
  type AgentCaps,
  AgentConnection,
  defaultAgentCaps,
  SshHub,
  type SshHubOptions,
} from "./hub_ssh.ts";
export { Backoff, type BackoffOptions } from "./backoff.ts";
export { type ControlMessage, ControlStream } from "./control_stream.ts";
export {
  type AgentHello,
  ControlProtocolError,
  type HubHello,
  maxReplicas,
  parseAgentHello,
  parseHubHello,
  parseReconnect,
  parseReplicasUpdate,
  type ReconnectRequest,
  type ReplicasUpdate,
} from "./control_messages.ts";
export { checkFingerprint, fingerprintOfBlob, fingerprintOfKey } from "./fingerprint.ts";
export { bypassesProxy, dialTcp, type ProxyEnv, proxyFor, redactUrl } from "./proxy_dial.ts";
export { splice, type SpliceStats } from "./splice.ts";
export { cipherOrder, sshAlgorithms } from "./ssh_algorithms.ts";
export {
  acceptTunnel,
  type DialOptions,
  dialTunnel,
  type TunnelStream,
  tunnelWebSocketServer,
} from "./websocket_stream.ts";
export { DatagramDecoder, encodeDatagram, maxDatagramBytes } from "./datagram_framing.ts";
export { installSsh2Fixes, patchedSsh2Version } from "./ssh2_fixes.ts";
export {
  askedToWindDown,
  type EofFramed,
  eofFramed,
  eofFramedUpgrade,
  FrameTooLongError,
  maxEofFrameLength,
  windDownEvent,
} from "./eof_framing.ts";
