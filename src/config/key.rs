//! One `[key.NAME]` table: raw → validated [`KeyConfig`].

use std::collections::BTreeMap;

use toml::Spanned;

use super::names::MirrorName;
use super::raw::{RawKey, Source};
use super::{Cidr, KeyConfig, Mirror, Verb};
use crate::error::Result;

/// Checks one key table against the mirrors of the same file.
pub(super) fn validate_key(
    src: &Source,
    name: &Spanned<String>,
    k: RawKey,
    mirrors: &BTreeMap<String, Mirror>,
) -> Result<KeyConfig> {
    let n = name.get_ref().clone();
    if !MirrorName::is_valid(&n) {
        return src.err(
            name.span(),
            &format!("key.{n}"),
            "key names follow the mirror name rules",
        );
    }
    let mut verbs = Vec::new();
    for v in &k.verbs {
        match v.get_ref().parse::<Verb>() {
            Ok(verb) => verbs.push(verb),
            Err(why) => return src.err(v.span(), &format!("key.{n}.verbs"), why),
        }
    }
    let mut ms = Vec::new();
    for m in &k.mirrors {
        if !mirrors.contains_key(m.get_ref()) {
            return src.err(
                m.span(),
                &format!("key.{n}.mirrors"),
                format!("no mirror named {:?} in this file", m.get_ref()),
            );
        }
        ms.push(m.get_ref().clone());
    }
    let mut from = Vec::new();
    for f in &k.from {
        match f.get_ref().parse::<Cidr>() {
            Ok(c) => from.push(c),
            Err(why) => return src.err(f.span(), &format!("key.{n}.from"), why),
        }
    }
    let max_waiting = match &k.max_waiting {
        Some(v) => Some(super::mirror::max_waiting(
            src,
            v,
            &format!("key.{n}.max_waiting"),
        )?),
        None => None,
    };
    Ok(KeyConfig {
        name: n,
        verbs,
        mirrors: ms,
        from,
        max_waiting,
        runmirrors: k.runmirrors.unwrap_or(false),
    })
}
