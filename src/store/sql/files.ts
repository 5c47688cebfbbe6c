// File rows: uploads awaiting their bytes, processed uploads, batch outputs.
import type { Kysely, Transaction } from 'kysely';
import type { Database, FilePurpose, FileRow, FileUpdate, NewFile } from './schema.ts';
import { OPEN_BATCH_STATUSES } from './schema.ts';

type Db = Kysely<Database> | Transaction<Database>;

export async function insertFile(db: Db, row: NewFile): Promise<void> {
  await db.insertInto('files').values(row).execute();
}

export async function findFile(db: Db, id: string): Promise<FileRow | undefined> {
  return db.selectFrom('files').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The file as its owner sees it; another user's file is indistinguishable from a missing one. */
export async function findUserFile(db: Db, userId: string, id: string): Promise<FileRow | undefined> {
  return db.selectFrom('files').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
}

export async function findProcessedFileBySha256(
  db: Db,
  userId: string,
  sha256: string,
  purpose: FilePurpose,
): Promise<FileRow | undefined> {
  return db
    .selectFrom('files')
    .selectAll()
    .where('user_id', '=', userId)
    .where('sha256', '=', sha256)
    .where('purpose', '=', purpose)
    .where('status', '=', 'processed')
    .orderBy('id', 'desc')
    .executeTakeFirst();
}

export interface ListFilesQuery {
  userId: string;
  limit: number;
  after?: string;
  order: 'asc' | 'desc';
  purposes?: FilePurpose[];
  now: number;
}

/** Ids sort by creation time (see ids.ts), so `after` is a keyset cursor on id. Fetches limit+1 to tell has_more. */
export async function listFiles(db: Db, q: ListFilesQuery): Promise<FileRow[]> {
  let query = db
    .selectFrom('files')
    .selectAll()
    .where('user_id', '=', q.userId)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', q.now)]));
  if (q.purposes && q.purposes.length > 0) query = query.where('purpose', 'in', q.purposes);
  if (q.after) query = query.where('id', q.order === 'desc' ? '<' : '>', q.after);
  return query.orderBy('id', q.order).limit(q.limit + 1).execute();
}

export async function updateFile(db: Db, id: string, values: FileUpdate): Promise<void> {
  await db.updateTable('files').set(values).where('id', '=', id).execute();
}

/** Moves a file from one status to another only if it is still in `from`; true if this caller won. */
export async function transitionFileStatus(
  db: Db,
  id: string,
  from: FileRow['status'],
  values: FileUpdate,
): Promise<boolean> {
  const result = await db.updateTable('files').set(values).where('id', '=', id).where('status', '=', from).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Deletes a file row only while it still awaits its bytes; true if it did. */
export async function deleteAwaitingFile(db: Db, id: string): Promise<boolean> {
  const result = await db.deleteFrom('files').where('id', '=', id).where('status', '=', 'awaiting_upload').executeTakeFirst();
  return Number(result.numDeletedRows) === 1;
}

export async function deleteFileRow(db: Db, id: string): Promise<void> {
  await db.deleteFrom('files').where('id', '=', id).execute();
}

/** An open batch reading this file as input, if any (such a file must not be deleted). */
export async function findOpenBatchUsingFile(db: Db, fileId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('batches')
    .select('id')
    .where('input_file_id', '=', fileId)
    .where('status', 'in', [...OPEN_BATCH_STATUSES])
    .executeTakeFirst();
  return row?.id;
}

/** Files whose retention has lapsed. */
export async function listExpiredFiles(db: Db, now: number, limit: number): Promise<FileRow[]> {
  return db.selectFrom('files').selectAll().where('expires_at', '<=', now).limit(limit).execute();
}
