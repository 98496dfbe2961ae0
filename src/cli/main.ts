/**
 * The `walvault` command. Each subcommand loads only what it needs: `wal-fetch` runs once per
 * WAL segment under restore_command, so its start-up must stay small.
 */
import { Command, CommanderError, Option } from 'commander';
import { reportAndExit } from './fail';

const VERSION = '0.1.0';

// The archive a read-only command works on: a site of a config file, or a bare URL.
const configOption = () => new Option('--config <file>', 'configuration file');
const siteOption = () => new Option('--site <name>', 'site of the config file');
const archiveOption = () => new Option('--archive <url>', 'archive location, file:///path, a plain path, s3://bucket/prefix or azure://container/prefix');
// The one site a command works on, given as `walvault run` takes it (instead of --config).
const pgOption = (why = '') => new Option('--pg <conninfo>', `one-site form: libpq connection string${why} (no password: use PGPASSWORD or a password file)`);
const siteArchiveOption = () => new Option('--archive <url>', 'one-site form: archive location, file:///path, a plain path, s3://bucket/prefix or azure://container/prefix');
const stateOption = () => new Option('--state <dir>', 'one-site form: state directory of the site (spool and ledger)');
const slotOption = () => new Option('--slot <name>', 'one-site form: physical replication slot (default walvault_default)');

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
    .addOption(pgOption())
    .addOption(siteArchiveOption())
    .addOption(stateOption())
    .addOption(slotOption())
    .addOption(new Option('--mode <mode>', 'one-site form: what "flushed" means to the server').choices(['archive', 'sync']))
    .addOption(new Option('--compression <codec>', 'one-site form: codec for stored objects (default: zstd for s3:// and azure://, none for a local directory)').choices(['zstd', 'lz4', 'snappy', 'gzip', 'none']))
    .option('--encryption-public-key <file>', 'one-site form: encrypt stored objects for this public key (from "walvault keys create")')
    .option('--archive-file-mode <mode>', 'one-site form: mode of a local archive\'s objects: 0600 (default), 0640 (its directory\'s group may read), 0644')
    .option('--backup-interval <hours>', 'one-site form: hours between scheduled base backups (default 24; the first is taken at start when the archive has none); 0 = no schedule')
    .option('--fast-first-backup', 'one-site form: the first backup (the archive has none) asks the server for an immediate checkpoint instead of a spread one')
    .action(async (opts) => {
      const { runCommand } = await import('./run');
      await runCommand(opts);
    });

  program
    .command('wal-fetch')
    .description('restore_command helper: copy WALFILENAME from the archive to DEST; exit 1 when the archive lacks it and holds no WAL after it; exit 126 on a gap (a missing segment with WAL archived after it), so recovery stops there instead of ending early')
    .argument('<walfilename>', 'WAL file name as PostgreSQL asks for it (%f)')
    .argument('<dest>', 'path to write it to (%p)')
    .option('--config <file>', 'configuration file naming the archive')
    .option('--site <name>', 'site of the config file')
    .option('--archive <url>', 'archive location, file:///path, a plain path, s3://bucket/prefix or azure://container/prefix')
    .option('--private-key <file>', "private key for an encrypted archive (default: the site's encryption_private_key_file)")
    .option('--serve-partial', 'when the segment was never completed, serve the newest WALFILENAME.partial, zero-padded (the end of the archive)')
    .option('--prefetch <n>', 'keep the next N segments ready in pg_wal/walvault-prefetch (a background process fetches them)')
    .option('--accept-gap', 'on a gap, exit 1 with a line saying so: recovery ends at the gap and loses the WAL after it')
    .option('--timeout <seconds>', "give up an attempt when the store has sent no answer or progress for this long (default: the site's request_timeout_seconds, else 30); after 3 attempts exit 126, so recovery stops instead of waiting forever")
    .action(async (walFileName: string, dest: string, opts) => {
      const { walFetchCommand } = await import('./wal-fetch');
      process.exitCode = await walFetchCommand(walFileName, dest, opts);
    });

  program
    .command('check')
    .description('which backups the archive can restore and to where; missing WAL (as ranges), history files and backup parts; exit 0 clean, 1 something missing, 2 could not check')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--private-key <file>', "private key of an encrypted archive (default: the site's encryption_private_key_file)")
    .option('--repair', "stream missing WAL ranges again from the site's server (needs --config) and archive them, then check again")
    .option('--backup-if-needed', 'with --repair: when the server no longer has a missing range, take a new base backup')
    .option('--json', 'the report as JSON')
    .action(async (opts) => {
      const { checkCommand } = await import('./check');
      process.exitCode = await checkCommand(opts);
    });

  program
    .command('verify')
    .description('read every stored object and check it (envelope checksums; WAL page headers against the cluster); each bad object named; exit 0 good, 1 bad objects, 2 could not check')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--private-key <file>', "private key, to check encrypted objects' contents too (without it: their stored checksums)")
    .option('--json', 'the report as JSON')
    .action(async (opts) => {
      const { verifyCommand } = await import('./check');
      process.exitCode = await verifyCommand(opts);
    });

  program
    .command('drill')
    .description('restore the newest backup into a temporary directory, recover it to the end of the archive as a throw-away hot standby, query it, remove it; times each phase')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--private-key <file>', "private key of an encrypted archive (default: the site's encryption_private_key_file)")
    .option('--backup <name>', 'backup to drill (default LATEST)')
    .option('--query <sql>', 'a query of yours to run on the recovered cluster')
    .option('--pg-bin <dir>', "directory of the backup's PostgreSQL version's pg_ctl (default /usr/lib/postgresql/MAJOR/bin)")
    .option('--os-user <name>', 'when run as root: the OS user the server runs as (default postgres)')
    .option('--db-user <role>', "role to query as (default: the site's user, else postgres)")
    .option('--work-dir <dir>', 'where the temporary directory goes (default the system temp dir)')
    .option('--keep', 'keep the restored directory')
    .option('--timeout <seconds>', 'give up after this long (default 3600)')
    .option('--json', 'the report as JSON')
    .action(async (opts) => {
      const { drillCommand } = await import('./drill');
      process.exitCode = await drillCommand(opts);
    });

  program
    .command('status')
    .description("each site's daemon, connection, timeline, positions and lag, last archived segment, last and next backup, recoverable window, and every problem with its fix; exit 0 when none, 1 otherwise")
    .option('--config <file>', 'configuration file')
    .option('--site <name>', 'only this site')
    .addOption(siteArchiveOption())
    .addOption(stateOption())
    .addOption(pgOption(', to ask the server too'))
    .addOption(slotOption())
    .option('--json', 'the report as JSON (docs/status.md)')
    .action(async (opts) => {
      const { statusCommand } = await import('./status');
      process.exitCode = await statusCommand(opts);
    });

  const slot = program.command('slot').description("the site's replication slot on its server");
  slot
    .command('drop')
    .description("remove the site's replication slot from its server, for a site that stops for good (an inactive slot keeps WAL until the server's disk is full); refused while walvault runs for the site; a dry run unless --confirm")
    .option('--config <file>', 'configuration file')
    .option('--site <name>', 'site of the config file')
    .addOption(pgOption())
    .addOption(stateOption())
    .addOption(slotOption())
    .option('--confirm', 'really drop it (without it: say what would be dropped)')
    .action(async (opts) => {
      const { slotDropCommand } = await import('./slot');
      await slotDropCommand(opts);
    });

  program
    .command('wal-push')
    .description('archive_command helper: store the WAL file at WALPATH in the archive, as the receiver would')
    .argument('<walpath>', 'path of the WAL file as PostgreSQL gives it (%p)')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--archive-file-mode <mode>', 'with --archive: mode of a local archive\'s objects: 0600 (default), 0640, 0644')
    .action(async (walPath: string, opts) => {
      const { walPushCommand } = await import('./wal-push');
      await walPushCommand(walPath, opts);
    });

  // Started by wal-fetch --prefetch in the background; not for direct use.
  program
    .command('wal-prefetch', { hidden: true })
    .argument('<walfilename>')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--private-key <file>')
    .requiredOption('--count <n>')
    .requiredOption('--dir <dir>')
    .option('--timeout <seconds>')
    .action(async (walFileName: string, opts) => {
      const { walPrefetchCommand } = await import('./wal-fetch');
      process.exitCode = await walPrefetchCommand(walFileName, opts);
    });

  program
    .command('copy')
    .description("bring an archive up to date from another: every WAL file and complete backup it lacks, each read and verified from the source and written and verified with the destination's codec and key; nothing it holds is written over; exit 0 done, 1 objects not copied (each named), 2 could not run")
    .requiredOption('--from <archive>', 'archive to copy from: a location (plain path, file://, s3://, azure://) or, with --config, the name of a site')
    .requiredOption('--to <archive>', 'archive to bring up to date: a location or, with --config, the name of a site')
    .addOption(configOption())
    .option('--private-key <file>', "private key of an encrypted source archive (default: the --from site's encryption_private_key_file)")
    .addOption(new Option('--compression <codec>', "codec for a new destination (default: the --to site's, else zstd for s3:// and azure://, none for a directory); an archive keeps the codec it recorded").choices(['zstd', 'lz4', 'snappy', 'gzip', 'none']))
    .option('--encryption-public-key <file>', 'encrypt what is written to the destination for this public key (an encrypted destination needs its own)')
    .option('--concurrency <n>', 'objects read and written at once (default 4)')
    .option('--dry-run', 'only say what would be copied')
    .option('--json', 'the report as JSON')
    .action(async (opts) => {
      const { copyCommand } = await import('./copy');
      process.exitCode = await copyCommand(opts);
    });

  const backup = program.command('backup').description('base backups: take one, list them, show one');
  backup
    .command('push')
    .description('take a base backup now (BASE_BACKUP over replication), streamed into the archive; works beside a running "walvault run"')
    .option('--config <file>', 'configuration file')
    .option('--site <name>', 'site of the config file')
    .addOption(pgOption())
    .addOption(siteArchiveOption())
    .addOption(stateOption())
    .addOption(new Option('--compression <codec>', 'one-site form: codec for stored objects').choices(['zstd', 'lz4', 'snappy', 'gzip', 'none']))
    .option('--encryption-public-key <file>', 'one-site form: encrypt stored objects for this public key')
    .option('--archive-file-mode <mode>', 'one-site form: mode of a local archive\'s objects: 0600 (default), 0640, 0644')
    .option('--fast', 'ask the server for an immediate checkpoint instead of a spread one')
    .option('--max-rate <kBps>', 'limit the transfer rate on the server, in kB/s (32 to 1048576)')
    .option('--label <text>', 'backup label (default: walvault NAME)')
    .option('--wal-wait <seconds>', 'how long to wait for the WAL through the stop LSN to be archived (default 3600)')
    .option('--no-wait', 'fail at once when another backup of the archive is running, instead of waiting for it to end')
    .option('--incremental', 'PostgreSQL 17+ with summarize_wal on: only the blocks changed since the parent backup')
    .option('--parent <name>', 'with --incremental: the backup to take it against (default: the newest complete one on the server\'s timeline history)')
    .action(async (opts) => {
      const { backupPushCommand } = await import('./backup');
      await backupPushCommand(opts);
    });
  backup
    .command('list')
    .description('complete (restorable) backups, oldest first')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const { backupListCommand } = await import('./backup');
      await backupListCommand(opts);
    });
  backup
    .command('show')
    .description("one backup's metadata (JSON)")
    .argument('<name>', 'backup name, as listed')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .action(async (name: string, opts) => {
      const { backupShowCommand } = await import('./backup');
      await backupShowCommand(name, opts);
    });

  backup
    .command('delete')
    .description('delete backups (and the WAL no remaining backup needs); a dry run unless --confirm')
    .argument('[name]', 'one backup, as listed')
    .option('--before <name>', 'every backup older than this one')
    .option('--retain <n>', 'all but the newest N backups, and incomplete leftovers')
    .option('--everything', 'every backup and all WAL')
    .option('--with-dependents', 'with NAME: also the incremental backups taken against it (and against those)')
    .option('--confirm', 'really delete (without it: print what would be deleted)')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .action(async (name: string | undefined, opts) => {
      const { backupDeleteCommand } = await import('./backup');
      await backupDeleteCommand(name, opts);
    });

  program
    .command('restore')
    .description('restore a base backup into TARGET_DIR, verified against its manifest, ready to recover from the archive')
    .argument('<target_dir>', 'directory to restore into (empty or absent, unless --delta or --force)')
    .addOption(configOption())
    .addOption(siteOption())
    .addOption(archiveOption())
    .option('--private-key <file>', 'private key for an encrypted archive')
    .option('--backup <name>', 'backup to restore, or LATEST (default: the newest that finished before the target)')
    .option('--target-time <timestamp>', 'recover up to this time (with its time zone)')
    .option('--target-lsn <lsn>', 'recover up to this WAL position')
    .option('--target-xid <xid>', 'recover up to this transaction')
    .option('--target-name <name>', 'recover up to this named restore point')
    .option('--target-immediate', 'stop as soon as the backup is consistent')
    .addOption(new Option('--target-action <action>', 'what to do at the target (default: pause, as PostgreSQL does)').choices(['promote', 'pause', 'shutdown']))
    .option('--target-timeline <tli>', 'latest, current or a number')
    .option('--standby', 'write standby.signal: a hot standby that keeps replaying from the archive')
    .option('--primary-conninfo <conninfo>', 'with --standby: also stream from this primary (no password in it)')
    .addOption(
      new Option('--archive-mode <mode>', "archive_mode of the restored server: off, so a restored copy never pushes its WAL into the source's archive, or preserve the source's setting")
        .choices(['off', 'preserve'])
        .default('off'),
    )
    .option('--tablespace-map <oid=dir>', 'restore tablespace OID into DIR (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--force', 'delete the contents of a non-empty target (and tablespace) directory first; with --delta, also restore into another cluster\'s data directory')
    .option('--delta', 'restore into a stopped data directory of the cluster, keeping files whose size and checksum match the backup; everything the backup does not have is removed')
    .option('--no-serve-partial', 'do not let recovery use the newest .partial segment (the last bytes received before the primary stopped)')
    .option('--accept-gap', 'let recovery end at a gap in the archive (a missing segment with WAL archived after it), losing what follows, instead of stopping there (written into restore_command as wal-fetch --accept-gap)')
    .option('--prefetch <n>', 'segments restore_command keeps ready ahead of replay (default 8; 0 turns it off)', '8')
    .action(async (targetDir: string, opts) => {
      const { restoreCommandCli } = await import('./restore');
      await restoreCommandCli(targetDir, opts);
    });

  const keys = program.command('keys').description('encryption keys for client-side encryption');
  keys
    .command('create')
    .description('write a new X25519 key pair: the public key for the backup host, the private key for restores')
    .requiredOption('--private-key <file>', 'where to write the private key (mode 0600; keep it off the backup host)')
    .requiredOption('--public-key <file>', 'where to write the public key (encryption_public_key_file)')
    .action(async (opts: { privateKey: string; publicKey: string }) => {
      const { createKeyPair } = await import('../archive/encryption');
      const kid = await createKeyPair(opts.privateKey, opts.publicKey);
      process.stdout.write(
        `key ${kid}: public key ${opts.publicKey}, private key ${opts.privateKey}\n` +
          `set encryption_public_key_file = "${opts.publicKey}" for the site; store the private key safely: without it the archive cannot be restored\n`,
      );
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  // If a command's work waits on something that can never happen (nothing left to wake it),
  // Node would exit with status 0 as if it had succeeded: say so and fail instead.
  let finished = false;
  const stalled = () => {
    if (finished) return;
    process.stderr.write('walvault: internal error: the command stopped before finishing (nothing left to wait for); this is a bug, please report it\n');
    process.exitCode = 70;
  };
  process.once('beforeExit', stalled);
  try {
    await program.parseAsync(argv);
    finished = true;
  } catch (err) {
    finished = true;
    if (err instanceof CommanderError) {
      // Commander already printed help, version or its own one-line complaint.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    reportAndExit(err);
  }
}
