//! PLACEHOLDER until the redirect matcher lands (being written in parallel).
#[derive(Clone, Debug)]
pub struct Allowlist(Vec<String>);
#[derive(Debug, thiserror::Error)]
#[error("redirect uri refused")]
pub struct RedirectError;
impl Allowlist {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, RedirectError> {
        Ok(Allowlist(entries.iter().map(|s| s.as_ref().to_string()).collect()))
    }
    pub fn check(&self, uri: &str) -> Result<url::Url, RedirectError> {
        url::Url::parse(uri).map_err(|_| RedirectError)
    }
}
pub fn match_registered<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered.iter().find(|r| r.as_str() == requested).map(|s| s.as_str())
}
