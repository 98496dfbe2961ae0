/**
 * A server_version_num as people write the version: 150018 is "15.18", 170002 "17.2";
 * before PostgreSQL 10 the major version had two parts, so 90624 is "9.6.24".
 */
export function serverVersionText(versionNum: number): string {
  if (versionNum >= 100000) return `${Math.floor(versionNum / 10000)}.${versionNum % 10000}`;
  return `${Math.floor(versionNum / 10000)}.${Math.floor(versionNum / 100) % 100}.${versionNum % 100}`;
}
