/**
 * Agent constants (drop-in for @pm2/agent's constants.js).
 * `PM2_<KEY>` environment variables override a constant, converted to the
 * type of its default (PM2_HOME is never overridden this way).
 */
declare namespace constants {
  export interface AgentConstants {
    /** env PM2_DEBUG (false unless set to something other than false/0/no/off). */
    DEBUG: boolean
    /** env KEYMETRICS_NODE || 'https://root.keymetrics.io' (verifyPM2 base URL). */
    KEYMETRICS_ROOT_URL: string
    /** 1 (X-PROTOCOL-VERSION). */
    PROTOCOL_VERSION: number
    /** false. */
    COMPRESS_PROTOCOL: boolean
    /** 1000 ms between status pushes. */
    STATUS_INTERVAL: number
    /** 200 packets kept while offline. */
    PACKET_QUEUE_SIZE: number
    /** env PM2_PROXY. */
    PROXY: string | undefined
    /** 8 log lines kept per application. */
    LOGS_BUFFER: number
    /** 4 source lines each side of an error. */
    CONTEXT_ON_ERROR: number
    /** 30000 ms; 1000 when NODE_ENV=local_test (or PM2_DEBUG=true; PM2_DEBUG decides when set). */
    TRANSACTION_FLUSH_INTERVAL: number
    /** 600; 0 when NODE_ENV is test/development (or PM2_DEBUG=true; PM2_DEBUG decides when set). */
    AGGREGATION_DURATION: number
    /** 60000 ms; 1000 when NODE_ENV=local_test (or PM2_DEBUG=true; PM2_DEBUG decides when set). */
    TRACE_FLUSH_INTERVAL: number
    /** Running under Bun. */
    IS_BUN: boolean
    /** env PM2_HOME, else os.homedir()/.pm2 (or the home given to forHome). */
    PM2_HOME: string
    /** $PM2_HOME/rpc.sock (win32: \\.\pipe\rpc.sock). */
    DAEMON_RPC_PORT: string
    /** $PM2_HOME/pub.sock (win32: \\.\pipe\pub.sock). */
    DAEMON_PUB_PORT: string
    /** $PM2_HOME/interactor.sock (win32: \\.\pipe\interactor.sock). */
    INTERACTOR_RPC_PORT: string
    /** $PM2_HOME/agent.log. */
    INTERACTOR_LOG_FILE_PATH: string
    /** $PM2_HOME/agent.pid. */
    INTERACTOR_PID_PATH: string
    /** $PM2_HOME/agent.json5. */
    INTERACTION_CONF: string
    /** $PM2_HOME/dump.pm2. */
    DUMP_FILE_PATH: string
    /** A v4 UUID drawn once per process. */
    UNIQUE_SERVER_ID: string
    /** env PM2_AGENT_ENABLE_CONTEXT_ON_ERROR === 'true' when set, else true. */
    ENABLE_CONTEXT_ON_ERROR: boolean
    /** 0. */
    SUCCESS_EXIT: number
    /** 1. */
    ERROR_EXIT: number
  }

  export interface BuildOptions {
    /** PM2_HOME to use (default: resolvePM2Home(env)). */
    pm2Home?: string
    /** Environment to read (default: process.env). */
    env?: Record<string, string | undefined>
    /** Platform (default: process.platform); 'win32' selects the pipe names. */
    platform?: string
  }

  /** The helpers are non-enumerable: Object.assign / Object.keys only see the constants. */
  export interface ConstantsModule extends AgentConstants {
    /** A fresh constants object. */
    build(opts?: BuildOptions): ConstantsModule
    /** The constants for another PM2_HOME (the exported object is not modified). */
    forHome(pm2Home?: string): ConstantsModule
    /** env PM2_HOME, else os.homedir()/.pm2. */
    resolvePM2Home(env?: Record<string, string | undefined>): string
  }
}

declare const constants: constants.ConstantsModule
export = constants
