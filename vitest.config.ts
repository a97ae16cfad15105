import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // e2e tests share the kernel (namespaces, TUN devices, CPU): run files one at a time so
    // timings and failover measurements are not disturbed by a neighbour.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    include: ['test/**/*.test.ts', 'eval/**/*.test.ts'],
    reporters: ['default'],
  },
});
