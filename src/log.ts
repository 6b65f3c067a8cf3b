// Structured logs (JSON lines on stderr) through pino.
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, destination: number = 2): Logger {
  return pino(
    { level, base: { svc: 'cnmd' }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: destination, sync: true }),
  );
}
