import { Command, CommanderError } from 'commander';
import { agentCommand, statusCommand } from '../agent/main.ts';
import { rmCommand } from '../mapping-server/main.ts';
import { keygenCommand } from './keygen.ts';
import { dataCommand, userCommand } from './user-data.ts';
import { isRealmnetError } from '../shared/errors.ts';
import { VERSION } from '../shared/version.ts';

/**
 * `realmnet`: one binary, one subcommand per program. User mistakes (config, usage, privileges) print
 * one line and exit non-zero; anything else is a bug and prints its stack.
 */
export function buildProgram(): Command {
  const program = new Command('realmnet')
    .description(
      `realmnet - multihoming for hosts through an ID/locator overlay organised in realms.

Applications talk to stable host IDs (IPv6 addresses from the realm's prefix); the agent on each host maps them to the peer's current locators (the addresses of its uplinks) and carries the packets in UDP. When an uplink fails, traffic moves to another one: connections keep their IDs.`,
    )
    .version(VERSION)
    .showSuggestionAfterError()
    // Lets `realmnet rm invite --config X` give --config to invite rather than to rm.
    .enablePositionalOptions()
    .configureHelp({ sortSubcommands: false })
    .addHelpText(
      'after',
      `
Quick start (two hosts on one box, in network namespaces):  see README.md
Config reference:  examples/agent.yaml      Errors and fixes:  docs/errors.md`,
    );
  program.addCommand(agentCommand());
  program.addCommand(statusCommand());
  program.addCommand(rmCommand());
  program.addCommand(keygenCommand());
  program.addCommand(userCommand());
  program.addCommand(dataCommand());
  throwInsteadOfExit(program);
  return program;
}

/**
 * exitOverride is not inherited by commands added with addCommand: without this, a usage mistake in
 * a subcommand (`realmnet user create` without --prefix) would make commander call process.exit(1)
 * itself instead of reaching main's one-line handler and exit code 2.
 */
function throwInsteadOfExit(cmd: Command): void {
  cmd.exitOverride();
  for (const sub of cmd.commands) throwInsteadOfExit(sub);
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed its message (or the help).
      return e.exitCode === 0 ? 0 : 2;
    }
    if (isRealmnetError(e) && e.userFacing) {
      for (const line of e.oneLine().split('\n')) process.stderr.write(`realmnet: ${line}\n`);
      return e.code === 'USAGE' ? 2 : 1;
    }
    process.stderr.write(`realmnet: unexpected error (a bug; please report it):\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}
