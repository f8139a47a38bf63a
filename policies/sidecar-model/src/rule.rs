//! How a policy's rules are declared: each rule once, with its stable name, its default
//! level and what it checks. The settings' `rules` map, the policy's README table and its
//! `questions-ui.yml` all follow the declaration (tests hold the documents to it).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a rule's violations do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// Reject the request.
    Deny,
    /// Accept it with a warning.
    Warn,
    /// Ignore the rule.
    Off,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Deny => "deny",
            Level::Warn => "warn",
            Level::Off => "off",
        }
    }
}

/// A policy's set of rules, declared with [`declare_rules!`].
pub trait Rule: Copy + Ord + fmt::Debug + 'static {
    /// Every rule, in the order the policy runs and documents them.
    const ALL: &'static [Self];
    /// The stable name settings, messages and documents use (`legacy-sidecar`).
    fn name(self) -> &'static str;
    /// The level a rule has when the settings do not give one.
    fn default_level(self) -> Level;
    /// What the rule checks, in one line.
    fn summary(self) -> &'static str;
}

/// Declares a policy's rules once: `Variant = "name", Level, "summary";` for each. Gives the
/// enum, [`Rule`], `Display` and `Serialize` by name.
#[macro_export]
macro_rules! declare_rules {
    (
        $(#[$meta:meta])*
        pub enum $rules:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $name:literal, $level:ident, $summary:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $rules {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $crate::rule::Rule for $rules {
            const ALL: &'static [Self] = &[$($rules::$variant),*];

            fn name(self) -> &'static str {
                match self { $($rules::$variant => $name,)* }
            }

            fn default_level(self) -> $crate::rule::Level {
                match self { $($rules::$variant => $crate::rule::Level::$level,)* }
            }

            fn summary(self) -> &'static str {
                match self { $($rules::$variant => $summary,)* }
            }
        }

        impl ::std::fmt::Display for $rules {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::rule::Rule::name(*self))
            }
        }

        impl ::serde::Serialize for $rules {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::rule::Rule::name(*self))
            }
        }
    };
}

/// The settings' `rules`: a level per rule name. A name that is no rule is refused, so a
/// typo fails `validate_settings`; a rule left out keeps its default level.
#[derive(Clone, PartialEq, Eq)]
pub struct Levels<R: Rule> {
    given: BTreeMap<R, Level>,
}

impl<R: Rule> Levels<R> {
    pub fn of(&self, rule: R) -> Level {
        self.given
            .get(&rule)
            .copied()
            .unwrap_or_else(|| rule.default_level())
    }

    /// These levels with `rule` at `level`.
    pub fn with(mut self, rule: R, level: Level) -> Self {
        self.given.insert(rule, level);
        self
    }

    /// The rules not turned off, in their order.
    pub fn on(&self) -> impl Iterator<Item = R> + '_ {
        R::ALL.iter().copied().filter(|&r| self.of(r) != Level::Off)
    }
}

impl<R: Rule> Default for Levels<R> {
    fn default() -> Self {
        Levels {
            given: BTreeMap::new(),
        }
    }
}

impl<R: Rule> fmt::Debug for Levels<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(R::ALL.iter().map(|&r| (r.name(), self.of(r))))
            .finish()
    }
}

/// A rule by its name, as a key of the settings' `rules`: an unknown name is refused while
/// the key is read, so the error's path ends with the name (`rules.pod-levels`).
struct Name<R>(R);

impl<'de, R: Rule> Deserialize<'de> for Name<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<R>(std::marker::PhantomData<R>);
        impl<R: Rule> Visitor<'_> for Text<R> {
            type Value = Name<R>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match R::ALL.iter().find(|r| r.name() == name) {
                    Some(&rule) => Ok(Name(rule)),
                    None => {
                        let names: Vec<String> =
                            R::ALL.iter().map(|r| format!("`{}`", r.name())).collect();
                        Err(E::custom(format!(
                            "unknown field `{name}`, expected one of {}",
                            names.join(", ")
                        )))
                    }
                }
            }
        }
        d.deserialize_str(Text(std::marker::PhantomData))
    }
}

/// Every rule with its level, given or default: what the policy will do.
impl<R: Rule> Serialize for Levels<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(R::ALL.len()))?;
        for &rule in R::ALL {
            map.serialize_entry(rule.name(), &self.of(rule))?;
        }
        map.end()
    }
}

impl<'de, R: Rule> Deserialize<'de> for Levels<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names<R>(std::marker::PhantomData<R>);
        impl<'de, R: Rule> Visitor<'de> for Names<R> {
            type Value = Levels<R>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of rule names to deny, warn or off")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut given = BTreeMap::new();
                while let Some(Name(rule)) = map.next_key::<Name<R>>()? {
                    given.insert(rule, map.next_value()?);
                }
                Ok(Levels { given })
            }
        }
        d.deserialize_map(Names(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    declare_rules! {
        /// Two rules for the tests.
        pub enum Demo {
            First = "first", Deny, "the first rule";
            Second = "second-rule", Warn, "the second rule";
        }
    }

    #[test]
    fn levels_default_per_rule_and_refuse_unknown_names() {
        let levels: Levels<Demo> = serde_json::from_str(r#"{"second-rule": "off"}"#).unwrap();
        assert_eq!(levels.of(Demo::First), Level::Deny);
        assert_eq!(levels.of(Demo::Second), Level::Off);
        assert_eq!(levels.on().collect::<Vec<_>>(), [Demo::First]);
        assert_eq!(
            serde_json::to_value(&levels).unwrap(),
            serde_json::json!({"first": "deny", "second-rule": "off"})
        );
        let e = serde_json::from_str::<Levels<Demo>>(r#"{"frist": "off"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown field `frist`, expected one of `first`, `second-rule` at line 1 column 8"
        );
        let e = serde_json::from_str::<Levels<Demo>>(r#"{"first": "block"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `block`"), "{e}");
        assert_eq!(Demo::Second.to_string(), "second-rule");
        assert_eq!(Demo::Second.summary(), "the second rule");
    }
}
