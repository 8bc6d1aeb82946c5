/**
 * The agent daemon (`node src/InteractorDaemon.js` runs it). The work is
 * done by the Rust `NativeDaemon`; this class keeps the JS agent's API.
 */
declare class InteractorDaemon {
  /** Reads the daemon's environment; throws "You must provide a PM2_… environment variable". */
  constructor ()
  opts: { MACHINE_NAME?: string, PUBLIC_KEY?: string, PM2_VERSION: string }
  /** The `data` sent to verifyPM2: MACHINE_NAME, PUBLIC_KEY, RECYCLE, PM2_VERSION?, MEMORY, HOSTNAME, CPUS. */
  getSystemMetadata (): Record<string, unknown>
  /** `process.send(data)` when an IPC channel exists, else logs 'Could not send data to parent'. */
  sendToParent (data: unknown): void
  /** Binds interactor.sock, verifies, connects; `cb` once the workers run. */
  start (cb?: () => void): void
  /** Stops (exit code 0 without `err`, 1 with it); `cb` runs before the process exits. */
  exit (err?: Error | string | null, cb?: () => void): void
}
export = InteractorDaemon
