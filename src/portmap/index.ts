// Port publishing: `-p` parsing (spec.ts), host port allocation (allocator.ts), and the
// iptables rules of a sandbox's bindings (rules.ts). The userland proxy is proxy.ts.
export * from './spec';
export * from './allocator';
export * from './rules';
