// Keyrings kept in the browser's IndexedDB, one per agency. A CryptoKey is stored by structured clone and
// stays non-extractable: the stored private keys can be used by this origin's pages, never read out.

import type { AgencyKeyring } from "@deskbridge/partner";

const DATABASE = "deskbridge-console";
const STORE = "keyrings";

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Runs one request in its own transaction and resolves once the transaction is complete (durable). */
async function inStore<T>(
  mode: IDBTransactionMode,
  action: (store: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const open = indexedDB.open(DATABASE, 1);
  open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "agency" });
  const db = await request(open);
  try {
    const transaction = db.transaction(STORE, mode);
    const done = new Promise<void>((resolve, reject) => {
      transaction.oncomplete = () => resolve();
      transaction.onerror = transaction.onabort = () => reject(transaction.error);
    });
    const [result] = await Promise.all([request(action(transaction.objectStore(STORE))), done]);
    return result;
  } finally {
    db.close();
  }
}

export async function saveKeyring(ring: AgencyKeyring): Promise<void> {
  await inStore("readwrite", (s) => s.put(ring));
}

export async function loadKeyring(agency: string): Promise<AgencyKeyring | undefined> {
  return (await inStore("readonly", (s) => s.get(agency))) as AgencyKeyring | undefined;
}

export async function forgetKeyring(agency: string): Promise<void> {
  await inStore("readwrite", (s) => s.delete(agency));
}
