// The firewall layer: one backend interface (firewall.ts), the iptables backend, and cnmd's rule layout.
export * from './firewall';
export { canonicalRule, canonicalAddress } from './canonical';
export { IptablesBackend, defaultExec, SpareProcesses, parseSave, parseRestoreError } from './iptables';
export type {
  Exec,
  ExecResult,
  IptablesBackendOptions,
  IptablesCommands,
  IptablesStats,
  RestoreFailure,
} from './iptables';
export * from './layout';
