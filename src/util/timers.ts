/**
 * Exponential backoff with "equal jitter" (AWS architecture blog's name): the wait is half the
 * ceiling plus a random part of the other half, so it never drops to near zero (as full jitter
 * can) and many failing sites still do not retry in step.
 */
export function backoffDelayMs(attempt: number, baseMs = 1000, capMs = 60000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Waits for `p` at most `ms`; the timer is cleared either way so it never holds the process. */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `duty` every `intervalMs` until `signal` aborts, the first time after `firstDelayMs`
 * (or the interval, if shorter); an interval of 0 or less means never. `duty` handles its
 * own failures.
 */
export async function every(intervalMs: number, firstDelayMs: number, signal: AbortSignal, duty: () => Promise<void>): Promise<void> {
  if (intervalMs <= 0) return;
  await sleep(Math.min(firstDelayMs, intervalMs), signal);
  while (!signal.aborted) {
    await duty();
    await sleep(intervalMs, signal);
  }
}
