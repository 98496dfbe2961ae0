/**
 * What a streamed body itself threw (not the store), wrapped by an upload so that the backend
 * reports it as it is, rather than as a store failure. Apart from the uploads so that a
 * backend can use it without loading another backend's SDK.
 */
export class BodyFailed {
  constructor(readonly err: unknown) {}
}
