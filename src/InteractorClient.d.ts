/**
 * InteractorClient: the PM2 CLI / API side of the agent (drop-in for
 * @pm2/agent's src/InteractorClient.js). A class with static methods only.
 */
import type { ChildProcess } from 'child_process'
import type { AgentConstants } from '../constants'

declare namespace InteractorClient {
  /**
   * The constants object PM2 passes (its own conf, or `{}`): only the keys
   * each method reads matter, any other key is carried along.
   */
  type ClientConstants = Partial<AgentConstants> & { [key: string]: any }

  /** What `launchAndInteract` / `getOrSetConf` accept as options (`infos`). */
  interface LaunchOptions {
    public_key?: string
    secret_key?: string
    machine_name?: string
    pm2_version?: string
    /** Backend root URL; `null` means "not given". */
    info_node?: string | null
    agent_transport_websocket?: string
    agent_transport_axon?: string
    [key: string]: unknown
  }

  /** The resolved configuration (also what agent.json5 holds, as 4-space JSON, mode 0600). */
  interface InteractionConf {
    version_management: { active?: boolean }
    public_key: string
    secret_key: string
    machine_name: string
    pm2_version: string | undefined
    reverse_interact: boolean | string
    /** Prefixed with `https://` in the result when it has no `http` (the file keeps the raw value). */
    info_node: string
    /** Only present when set (env AGENT_TRANSPORT_WEBSOCKET, options or agent.json5). */
    agent_transport_websocket?: string
    /** Only present when set (env AGENT_TRANSPORT_AXON, options or agent.json5). */
    agent_transport_axon?: string
  }

  /** verifyPM2 answer as the agent forwards it. */
  interface KmData {
    active?: boolean
    pending?: boolean
    disabled?: boolean
    error?: boolean
    msg?: string
    endpoints?: { [name: string]: string }
    [key: string]: unknown
  }

  /** The agent's first (and only) IPC message. */
  interface AgentMessage {
    /** false with km_data; true (with `msg`, no km_data) when the agent gave up reaching the backend. */
    error?: boolean
    msg?: string
    /** A message with `log` is passed through untouched (the IPC channel stays open). */
    log?: unknown
    km_data?: KmData
    online?: boolean
    pid?: number
    machine_name?: string
    public_key?: string
    secret_key?: string
    [key: string]: unknown
  }

  /** RPC `getInfos` answer of an active agent (undefined while it is not active). */
  interface AgentInfos {
    machine_name: string
    public_key: string
    secret_key: string
    remote_host: string
    connected: boolean
    transporters: string[]
    socket_path: string
    pm2_home_monitored: string
    /**
     * Only with PM2_AGENT_INSPECT: the outgoing-traffic inspector's URL (without its token,
     * which is only in `url_file`), or why it is off (docs/inspector.md).
     */
    inspect?: { url: string, url_file: string } | { error: string }
    [key: string]: unknown
  }

  interface RpcResult {
    success: boolean
    /** 'reconnect attempt' | 'RPC connection to Interactor Daemon is not launched' | 'RPC closed' */
    msg?: string
  }

  /** Set up by launchRPC once something accepts on INTERACTOR_RPC_PORT. */
  interface InteractorRpc {
    /** RPC `kill` (args []): the agent unlinks its socket and pid file, answers, exits 0. */
    kill(cb?: (err: Error | null) => void): void
    /** RPC `getInfos` (args []). */
    getInfos(cb?: (err: Error | null, infos?: AgentInfos) => void): void
  }

  /**
   * daemonize / launchOrAttach / launchAndInteract callback; called once, with one of:
   * - `(null, msg, child)`   the agent answered (active, or inactive but not pending, or a `log` message);
   *                          when another agent already held agent.lock, `msg` is that agent's answer
   *                          (its pid), and `child` is undefined when launchOrAttach attached to an
   *                          agent a concurrent launch had just started;
   * - `(null, {}, child)`    no answer within 7 s (a warning is printed, the agent keeps retrying);
   * - `(msg)`                the backend refused: km_data.error, km_data.disabled,
   *                          km_data.active === false && km_data.pending === true, or the agent gave up
   *                          (`{error: true, msg}`) — a plain object, not an Error;
   * - `(Error)`              configuration error, spawn error, or the agent exited with code 1
   *                          ('Agent has shutdown for unknown reason');
   * - `()`                   PM2_AGENT_ONLINE is set (launchAndInteract only), or the agent exited
   *                          with another code before answering.
   */
  type LaunchCallback = (
    err?: Error | AgentMessage | null,
    msg?: AgentMessage | Record<string, never>,
    child?: ChildProcess
  ) => void
}

declare class InteractorClient {
  /** RPC methods set up by launchRPC (`{}` until it connected). */
  static rpc: InteractorClient.InteractorRpc | Record<string, never>
  /** Internal: the RPC connection state launchRPC created. */
  static client: unknown
  /** Internal: the RPC connection state launchRPC created (`closing` once disconnected). */
  static client_sock: { closing: boolean, close(): void, destroy?(): void } | undefined

  /**
   * Whether an agent accepts connections on `opts.INTERACTOR_RPC_PORT`.
   * Throws `Error('Missing parameters')` when `cb` is not a function; calls
   * `cb(Error('Missing parameters'))` when `opts` has no INTERACTOR_RPC_PORT.
   */
  static ping (
    opts: InteractorClient.ClientConstants | null | undefined,
    cb: (err: Error | null, online?: boolean) => void
  ): void

  /**
   * Stop the agent over RPC. `(Error('Interactor not launched'))` when none runs
   * (printed on stderr instead when there is no callback), else `(null, {success: true})`.
   * Sets `process.env.PM2_INTERACTOR_PROCESSING = 'true'`.
   */
  static killInteractorDaemon (
    conf: InteractorClient.ClientConstants,
    cb?: (err: Error | null, res?: InteractorClient.RpcResult) => void
  ): void

  /**
   * Connect to the agent: `(null, {success: true})` and `InteractorClient.rpc.kill/getInfos`,
   * or `(Error, {success: false, msg: 'reconnect attempt'})`.
   */
  static launchRPC (
    conf: InteractorClient.ClientConstants,
    cb: (err: Error | null, res: InteractorClient.RpcResult) => void
  ): void

  /**
   * Forget the RPC connection: `(null, {success: true})`, or `(null, {success: false, msg})`
   * with 'RPC connection to Interactor Daemon is not launched' / 'RPC closed'.
   */
  static disconnectRPC (cb: (err: Error | null, res?: InteractorClient.RpcResult) => void): void

  /**
   * Resolve the configuration (env > options > agent.json5), store it (mode 0600).
   * Errors: 'secret key is not defined', 'public key is not defined', or the write error.
   */
  static getOrSetConf (
    cst: InteractorClient.ClientConstants,
    infos: InteractorClient.LaunchOptions | null | undefined,
    cb: (err: Error | null, conf?: InteractorClient.InteractionConf) => void
  ): void

  /** Main entry: configuration, then start (or restart) the agent. See LaunchCallback. */
  static launchAndInteract (
    cst: InteractorClient.ClientConstants,
    opts: InteractorClient.LaunchOptions | null | undefined,
    cb?: InteractorClient.LaunchCallback
  ): void

  /**
   * Restart a running agent (killed first) or start it. An agent of this package that took
   * agent.lock less than 10 s ago with the same keys (a concurrent launch) is attached to
   * instead of restarted. See LaunchCallback.
   */
  static launchOrAttach (
    conf: InteractorClient.ClientConstants,
    infos: InteractorClient.InteractionConf,
    cb: InteractorClient.LaunchCallback
  ): void

  /**
   * Spawn the agent (detached, stdio [ignore, agent.log, agent.log, ipc]; the agent writes
   * agent.pid once it holds agent.lock), wait 7 s at most for its IPC answer. See LaunchCallback.
   */
  static daemonize (
    cst: InteractorClient.ClientConstants,
    conf: InteractorClient.InteractionConf,
    cb: InteractorClient.LaunchCallback
  ): void

  /**
   * Kill the running agent and launch it again from agent.json5:
   * `(null, {msg: 'Daemon launched'})`, `(Error('Interactor not launched'))` or the kill error.
   */
  static update (
    conf: InteractorClient.ClientConstants,
    cb?: (err: Error | null, res?: { msg: 'Daemon launched' }) => void
  ): void

  /**
   * The running agent's getInfos answer. Errors: 'PM2_NO_INTERACTION set',
   * 'Interactor is offline', or the RPC error.
   */
  static getInteractInfo (
    cst: InteractorClient.ClientConstants,
    cb: (err: Error | null, infos?: InteractorClient.AgentInfos) => void
  ): void
}

export = InteractorClient
