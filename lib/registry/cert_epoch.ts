/**
 * Certificate epochs: the value at the start of a user's client-certificate serial numbers that binds
 * the certificates to one version of the user record (see `UserRecord.certEpoch`).
 * @module
 */

/**
 * A new epoch: 6 random bytes as 12 hex digits, the first byte 0x10-0x7f so that the serial number is
 * positive (DER) and its hex form, as TLS libraries print it, never loses a leading zero.
 */
export function newCertEpoch(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  b[0] = 0x10 + (b[0]! % 0x70);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** True for text that {@link newCertEpoch} could have made. */
export function isCertEpoch(text: string): boolean {
  return /^[1-7][0-9a-f]{11}$/.test(text);
}

/** True when a certificate serial (hex, any case, optional colons) belongs to `epoch`. */
export function serialInEpoch(serial: string, epoch: string | undefined): boolean {
  if (epoch === undefined) return true;
  return serial.replace(/:/g, "").toLowerCase().startsWith(epoch);
}
