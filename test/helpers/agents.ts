import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentStatus } from '../../agent/agent.ts';
import { HOST_IDS, writeAgentConfigs, type AgentConfigOptions } from '../../scripts/testbed/configs.ts';
import type { Testbed } from '../../scripts/testbed/topology.ts';
import type { NsProcess } from './netns.ts';

export const REPO = join(new URL('.', import.meta.url).pathname, '..', '..');
const CLI = join(REPO, 'bin', 'realmnet.js');

export interface AgentPair {
  mh: NsProcess;
  ch: NsProcess;
  dir: string;
  stop(): Promise<void>;
}

/** Starts real agents in mh and ch with the testbed's configs, and waits until mh pings ch's ID. */
export async function startAgents(tb: Testbed, opts: AgentConfigOptions = {}): Promise<AgentPair> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-e2e-'));
  const cfg = await writeAgentConfigs(dir, { logLevel: 'info', ...opts });
  const mh = tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', cfg.mh], { cwd: REPO });
  const ch = tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', cfg.ch], { cwd: REPO });
  const pair: AgentPair = {
    mh,
    ch,
    dir,
    async stop() {
      await Promise.all([mh.stop(5000), ch.stop(5000)]);
      await rm(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const p of [mh, ch]) {
      if (!p.running()) {
        await pair.stop();
        throw new Error(`agent in ${p.node} exited during start-up:\n${p.stderrTail()}${p.stdoutTail()}`);
      }
    }
    const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', HOST_IDS.ch], { allowFail: true });
    if (r.code === 0) return pair;
    if (Date.now() > deadline) {
      await pair.stop();
      throw new Error(`agents did not connect within 20 s:\nmh: ${mh.stderrTail()}${mh.stdoutTail()}\nch: ${ch.stderrTail()}${ch.stdoutTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function agentStatus(tb: Testbed, node: 'mh' | 'ch'): Promise<AgentStatus> {
  const r = await tb.exec(node, process.execPath, [CLI, 'status', '--json'], { cwd: REPO });
  return JSON.parse(r.stdout) as AgentStatus;
}

export interface BulkResult {
  bytes: number;
  sha256: string;
  ms: number;
  reset: boolean;
}

/** A checked bulk TCP transfer from mh to ch over host IDs. */
export async function bulkTransfer(tb: Testbed, bytes: number, port = 5001): Promise<{ sent: BulkResult; received: BulkResult }> {
  const tool = join(REPO, 'scripts', 'tools', 'bulk.ts');
  const sink = tb.spawn('ch', process.execPath, ['--import', 'tsx', tool, 'sink', '--listen', HOST_IDS.ch, '--port', String(port)], { cwd: REPO });
  try {
    // Wait until the sink listens.
    for (let i = 0; i < 100 && !sink.stderrTail().includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
    const src = await tb.exec('mh', process.execPath, ['--import', 'tsx', tool, 'source', '--connect', HOST_IDS.ch, '--port', String(port), '--bytes', String(bytes)], {
      cwd: REPO,
      timeoutMs: 120_000,
    });
    await Promise.race([sink.exited, new Promise((r) => setTimeout(r, 10_000))]);
    const sent = JSON.parse(src.stdout.trim()) as BulkResult;
    const received = JSON.parse(sink.stdoutTail().trim()) as BulkResult;
    return { sent, received };
  } finally {
    await sink.stop();
  }
}
