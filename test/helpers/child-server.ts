/**
 * A test server in a child Node process (s3rver, Azurite) on 127.0.0.1, storing under a temp
 * directory, which tests can freeze (a hung store), stop (an outage) and start again with its
 * data. Subclasses say how to start it and how to tell that it answers.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { removeDir } from './temp-dirs';
import { waitFor } from './wait-for';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export abstract class ChildServer {
  private child: ChildProcess | null = null;
  private output = '';
  private paused = false;

  /** `stopSignal`: what stop() sends (SIGKILL after 15 s if the process has not exited). */
  protected constructor(
    readonly port: number,
    readonly dataDir: string,
    private readonly stopSignal: NodeJS.Signals,
  ) {}

  /** The child's Node arguments (script and options). */
  protected abstract nodeArgs(): string[];
  /** Resolves true once the server answers (and is ready for tests); may throw meanwhile. */
  protected abstract answers(): Promise<boolean>;

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  protected async startProcess(): Promise<void> {
    const child = spawn(process.execPath, this.nodeArgs(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    live.add(child);
    child.once('exit', () => live.delete(child));
    child.stdout!.on('data', (d: Buffer) => (this.output = (this.output + d.toString()).slice(-4000)));
    child.stderr!.on('data', (d: Buffer) => (this.output = (this.output + d.toString()).slice(-4000)));
    try {
      await waitFor(() => (!this.running ? Promise.reject(new Error(`the server exited: ${this.output}`)) : this.answers()), {
        timeoutMs: 30000,
        intervalMs: 100,
        what: `${this.constructor.name} on port ${this.port}`,
      });
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  }

  /**
   * Freezes the server process (SIGSTOP): a hung store. The kernel still accepts connections
   * and takes request bytes into its buffers, but nothing answers. Tests must resume() it
   * (or destroy() it) in an `after` hook.
   */
  pause(): void {
    if (this.child && this.running) {
      this.child.kill('SIGSTOP');
      this.paused = true;
    }
  }

  /** Lets a paused server run again (SIGCONT); it then answers what waited. */
  resume(): void {
    if (this.child && this.paused) this.child.kill('SIGCONT');
    this.paused = false;
  }

  /** Stops the server (an outage); its data stay for restart(). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (this.paused && this.stopSignal !== 'SIGKILL') child.kill('SIGCONT');
    this.paused = false;
    child.kill(this.stopSignal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
    await exited;
    clearTimeout(timer);
    this.child = null;
  }

  /** Starts it again on the same port with the same data. */
  async restart(): Promise<void> {
    await this.stop();
    await this.startProcess();
  }

  async destroy(): Promise<void> {
    await this.stop();
    removeDir(this.dataDir);
  }
}
