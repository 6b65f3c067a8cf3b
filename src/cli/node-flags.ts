// The V8 flags cnmd runs with (cnmd.js's #! line passes the same; launchers
// that run `node cnmd.js` themselves pass these). V8's young generation grows
// to 2 x 16 MB semi-spaces under the allocation of a sandbox burst and never
// shrinks again, not even after a full GC: 24 MB of RSS kept after the
// sandboxes are gone (docs/design-notes.md, "Memory after removal"). With
// 2 MB semi-spaces the daemon's RSS after removing 1,000 sandboxes stays at
// its peak instead of 25 MB above it; create times were within this machine's
// noise of the default's.
export const CNMD_NODE_FLAGS = ['--max-semi-space-size=2'];
