#!/usr/bin/env node
// Entry point: runs the TypeScript sources through tsx (no build step besides the native addon).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
const code = await main(process.argv);
// The agent returns only after a clean stop; other commands are done. Exit explicitly so that no
// stray handle keeps the process alive.
process.exit(code);
