// The Prometheus endpoint both programs offer when the config names `metrics.listen` (off by
// default): GET /metrics in the text exposition format, built with prom-client. The programs keep
// counting in their own plain objects (the hot path bumps a field, nothing more); the metrics read
// those objects when a scrape arrives, so an agent nobody scrapes pays nothing.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { parseListen, type ListenAddress } from './config.ts';
import { ConfigError, SystemError, errorLine } from './errors.ts';
import type { Logger } from './log.ts';

export { Histogram, Registry } from 'prom-client';

/** A registry with the process's standard metrics (CPU, memory, event-loop lag, GC) under `prefix`. */
export function newRegistry(prefix: string): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix });
  return registry;
}

type Labels<L extends string> = Partial<Record<L, string>>;

/**
 * A counter whose value is read from the program's own counters at each scrape. The values only grow
 * while the process lives; Prometheus's rate() handles the reset a restart brings.
 */
export function readCounter<L extends string = never>(registry: Registry, name: string, help: string, labelNames: readonly L[], read: () => Iterable<readonly [Labels<L>, number]>): void {
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of read()) this.inc(labels, v);
    },
  });
}

/** A gauge read at each scrape. */
export function readGauge<L extends string = never>(registry: Registry, name: string, help: string, labelNames: readonly L[], read: () => Iterable<readonly [Labels<L>, number]>): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of read()) this.set(labels, v);
    },
  });
}

/** camelCase → snake_case, for label values and metric names made from counter names. */
export function snake(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/[^A-Za-z0-9_]/g, '_').toLowerCase();
}

export interface MetricsServer {
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics on `listen`. `beforeScrape` runs once per scrape, before the metrics are read
 * (the agent takes one status snapshot there, so every metric of a scrape comes from the same moment).
 */
export async function startMetricsServer(listen: string, registry: Registry, log: Logger, beforeScrape?: () => void): Promise<MetricsServer> {
  const addr = parseListen(listen);
  if (addr === null) throw new ConfigError(`config error: metrics.listen: "${listen}" is not an address and port to listen on`, 'e.g. 127.0.0.1:9721 or [::1]:9721');
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/metrics' && !req.url?.startsWith('/metrics?'))) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('realmnet: metrics are at GET /metrics\n');
      return;
    }
    beforeScrape?.();
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (e: unknown) => {
        log.error({ err: errorLine(e) }, 'metrics: a collector failed (a bug)');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('collector failed\n');
      },
    );
  });
  // Scrapers are trusted little: slow clients are cut off rather than held.
  server.requestTimeout = 5_000;
  server.headersTimeout = 5_000;
  server.maxHeadersCount = 50;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new SystemError('METRICS_LISTEN_FAILED', `metrics.listen ${listen}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' ? 'no interface has this address' : e.message}`, 'choose another metrics.listen address or port, or remove metrics.listen')),
    );
    server.listen(addr.port, addr.host, () => resolve());
  });
  server.on('error', (e) => log.warn({ err: e.message }, 'metrics endpoint'));
  log.info({ listen }, 'metrics endpoint: GET /metrics');
  return {
    address: addr,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
