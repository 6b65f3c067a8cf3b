// Imported first by tests of the netlink I/O thread's ordering: the native
// addon reads CNMD_TEST_IO_LAG_US once, when it loads. With it, the I/O thread
// pauses after each send before taking the next, as a preempted thread would.
process.env.CNMD_TEST_IO_LAG_US = '20000';
export {};
