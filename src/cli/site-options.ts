/** The options that name a site: a config file's, or the one site given as `walvault run` takes it. */
export interface SiteOptions {
  config?: string;
  site?: string;
  pg?: string;
  archive?: string;
  state?: string;
  slot?: string;
}
