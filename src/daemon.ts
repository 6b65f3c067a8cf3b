// The daemon: wires config, logging and the API server; shuts down cleanly.
import * as fs from 'node:fs';
import { Config, parseHost } from './config';
import { createLogger, Logger } from './log';
import { ApiServer, baseRouter, startApiServer } from './api/server';
import { VERSION } from './version';

export class Daemon {
  readonly config: Config;
  readonly log: Logger;
  private api?: ApiServer;

  constructor(config: Config, log?: Logger) {
    this.config = config;
    this.log = log ?? createLogger(config.logLevel);
  }

  async start(): Promise<void> {
    const c = this.config;
    fs.mkdirSync(c.dataRoot, { recursive: true, mode: 0o700 });
    fs.mkdirSync(c.execRoot, { recursive: true, mode: 0o755 });
    this.api = await startApiServer(parseHost(c.host), baseRouter(), this.log);
    this.log.info({ version: VERSION, dataRoot: c.dataRoot, execRoot: c.execRoot, pluginDir: c.pluginDir, pid: process.pid }, 'cnmd started');
  }

  async stop(): Promise<void> {
    await this.api?.close();
    this.log.info('cnmd stopped');
  }
}
