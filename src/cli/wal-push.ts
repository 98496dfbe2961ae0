/**
 * `walvault wal-push WALPATH`, for archive_command (`%p`): the same archive objects as the
 * receiver writes (envelope, checksums, codec and encryption of the site), the same
 * no-overwrite rule and the same cluster guard, so both paths fill one archive.
 *
 * A segment (or a timeline's last segment, `.partial`) proves its cluster by its first page's
 * long header: system identifier, segment size, page size, and XLOG_PAGE_MAGIC (the major
 * version); every page header is checked before anything is stored. History and backup
 * history files go to an archive that already knows its cluster.
 * Exit 0: stored, or already stored with the same content. Anything else: one line, non-zero,
 * and PostgreSQL keeps the file and tries again.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Archive } from '../archive/archive';
import { adoptSettings, claimArchive } from '../archive/archive-settings';
import { openSiteArchive } from '../archive/site-archive';
import { defaultCompression } from '../config/keys';
import { ARCHIVE_FILE_MODE_HINT, parseArchiveFileMode } from '../config/archive-target';
import { WalvaultError } from '../errors';
import { isHistoryFileName, isSegmentFileName } from '../wal/lsn';
import { checkWalFile, readLongPageHeader } from '../wal/page-header';
import { archiveForWriting } from './archive-option';

export async function walPushCommand(walPath: string, opts: { config?: string; site?: string; archive?: string; archiveFileMode?: string }): Promise<void> {
  const name = path.basename(walPath);
  const segmentLike = isSegmentFileName(name) || /^[0-9A-F]{24}\.partial$/.test(name);
  const other = isHistoryFileName(name) || /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/.test(name);
  if (!segmentLike && !other) {
    throw new WalvaultError('WAL_BAD_NAME', `"${name}" is not a WAL file name PostgreSQL archives`, { fix: `pass %p from archive_command` });
  }
  let data: Buffer;
  try {
    data = await fsp.readFile(walPath);
  } catch (err) {
    throw new WalvaultError('STORAGE_IO', `cannot read ${walPath}: ${(err as Error).message}`, { fix: `pass %p from archive_command (relative to the data directory)`, cause: err });
  }
  const settings = archiveForWriting(opts, 'wal-push');
  if (opts.archiveFileMode !== undefined) {
    if (opts.config) throw new WalvaultError('CONFIG_INVALID', '--archive-file-mode goes with --archive', { fix: 'with --config set archive_file_mode in the site' });
    const mode = parseArchiveFileMode(opts.archiveFileMode);
    if (mode === null) throw new WalvaultError('CONFIG_INVALID', `--archive-file-mode "${opts.archiveFileMode}" is not a mode for archive objects`, { fix: `${ARCHIVE_FILE_MODE_HINT}` });
    settings.archiveFileMode = mode;
  }
  // A bare --archive gets the codec a one-site receiver would use there.
  const archive = openSiteArchive(
    { ...settings, compression: settings.compression ?? defaultCompression(settings.archive), compressionChosen: settings.compressionChosen ?? settings.compression !== undefined },
    'write',
  );
  // archive_command's output lands in the server's log: only what needs the operator.
  const log = {
    info: () => undefined,
    warn: (_f: unknown, msg: string) => void process.stderr.write(`walvault: warning: ${msg}\n`),
  };
  try {
    if (segmentLike) {
      const h = readLongPageHeader(data, walPath);
      // Refuses another cluster's archive, without writing, as the receiver does.
      await claimArchive(archive, { systemId: h.systemId.toString(), pgVersionNum: h.major * 10000, walSegmentSize: h.segSize }, log, settings.state);
      checkWalFile(data, name, walPath);
    } else {
      const cluster = await archive.readCluster();
      if (cluster === null) throw new WalvaultError('ARCHIVE_NOT_FOUND', `${archive.storage.description} has no cluster.json yet`, { fix: `it learns its cluster from a segment: archive one first` });
      await adoptSettings(archive, cluster, log, settings.state);
    }
    await archive.putImmutable(Archive.walKey(name), data);
  } finally {
    await archive.close();
  }
}
