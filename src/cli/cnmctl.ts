#!/usr/bin/env node
// cnmctl: the command line client of cnmd's API.
import { Command } from 'commander';
import { DEFAULTS, ENV } from '../config';
import { apiRequest } from './cnmctl-client';
import { VERSION } from '../version';

const program = new Command('cnmctl')
  .description('Command line client for cnmd')
  .option('-H, --host <addr>', `daemon socket [env ${ENV.host}]`, process.env[ENV.host] || DEFAULTS.host);

program
  .command('version')
  .description('Show the client and daemon versions')
  .action(async () => {
    const host = program.opts<{ host: string }>().host;
    console.log(`Client:\n Version:     ${VERSION}\n Node:        ${process.version}`);
    const r = await apiRequest(host, 'GET', '/version');
    if (r.status !== 200) throw new Error(r.body?.message ?? `daemon answered ${r.status}`);
    console.log(`\nServer:\n Version:     ${r.body.Version}\n API version: ${r.body.ApiVersion} (minimum ${r.body.MinAPIVersion})\n Kernel:      ${r.body.KernelVersion}`);
  });

program.parseAsync().catch((e: Error) => {
  console.error(`cnmctl: ${e.message}`);
  process.exit(1);
});
