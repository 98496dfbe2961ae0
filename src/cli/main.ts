/**
 * The `walvault` command. Each subcommand loads only what it needs: `wal-fetch` runs once per
 * WAL segment under restore_command, so its start-up must stay small.
 */
import { Command, CommanderError, Option } from 'commander';
import { reportAndExit } from './fail';

const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('walvault')
    .description('PostgreSQL continuous archiving over the physical replication protocol')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('run')
    .description('stream WAL from PostgreSQL into the archive, for every site of the config (or the one site given by options)')
    .option('--config <file>', 'configuration file (TOML or JSON), one section per site')
    .option('--site <name>', 'run only this site of the config file')
    .option('--pg <conninfo>', 'one-site form: libpq connection string (no password: use PGPASSWORD or a password file)')
    .option('--archive <url>', 'one-site form: archive location, file:///path or a plain path')
    .option('--state <dir>', 'one-site form: state directory (spool and ledger)')
    .option('--slot <name>', 'one-site form: physical replication slot (default walvault_default)')
    .addOption(new Option('--mode <mode>', 'one-site form: what "flushed" means to the server').choices(['archive', 'sync']))
    .action(async (opts) => {
      const { runCommand } = await import('./run');
      await runCommand(opts);
    });

  program
    .command('wal-fetch')
    .description('restore_command helper: copy WALFILENAME from the archive to DEST; exit 1 when the archive lacks it')
    .argument('<walfilename>', 'WAL file name as PostgreSQL asks for it (%f)')
    .argument('<dest>', 'path to write it to (%p)')
    .option('--config <file>', 'configuration file naming the archive')
    .option('--site <name>', 'site of the config file')
    .option('--archive <url>', 'archive location, file:///path or a plain path')
    .action(async (walFileName: string, dest: string, opts) => {
      const { walFetchCommand } = await import('./wal-fetch');
      process.exitCode = await walFetchCommand(walFileName, dest, opts);
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed help, version or its own one-line complaint.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    reportAndExit(err);
  }
}
