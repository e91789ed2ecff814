//! Relevance of past turns to a query: cosine over stored embeddings, or word overlap for
//! text. Pure; runs on an I/O thread when the turns come from the archive.

use std::collections::HashSet;

use super::render::push_json_message_scored;
use super::turn::Turn;
use crate::vector;

pub enum Query {
    Emb(Vec<f32>),
    Text(String),
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub struct Scorer {
    query: Query,
    query_words: HashSet<String>,
}

impl Scorer {
    pub fn new(query: Query) -> Scorer {
        let query_words = match &query {
            Query::Text(t) => words(t),
            Query::Emb(_) => HashSet::new(),
        };
        Scorer { query, query_words }
    }

    /// Cosine similarity (-1..1) with the turn's embedding, or the fraction of query words
    /// found in the turn (0..1). None when the turn cannot be compared (no or other-size
    /// embedding, no word in common).
    pub fn score(&self, m: &Turn) -> Option<f32> {
        match &self.query {
            Query::Emb(q) => match &m.emb {
                Some(e) if e.dim() == q.len() => Some(vector::cosine(q, &e.as_f32s())),
                _ => None,
            },
            Query::Text(_) => {
                if self.query_words.is_empty() {
                    return None;
                }
                let text = String::from_utf8_lossy(m.content);
                let hits = words(&text).intersection(&self.query_words).count();
                (hits > 0).then(|| hits as f32 / self.query_words.len() as f32)
            }
        }
    }

    /// The `k` best candidates, best first (ties: newer first).
    pub fn top_k<'a>(
        &self,
        candidates: impl Iterator<Item = Turn<'a>>,
        k: usize,
    ) -> Vec<(f32, Turn<'a>)> {
        let mut scored: Vec<(f32, Turn)> = candidates
            .filter_map(|m| self.score(&m).map(|s| (s, m)))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.seq.cmp(&a.1.seq)));
        scored.truncate(k);
        scored
    }
}

impl Scorer {
    /// An EMB query must have the dimension of the session's embeddings: when the turns hold
    /// embeddings and none has the query's dimension, the query is refused rather than
    /// silently finding nothing relevant. Turns without embeddings (or a session without any)
    /// are not an error: there is just nothing to compare.
    pub fn check_dimension(&self, turns: &[Turn]) -> Result<(), String> {
        let Query::Emb(q) = &self.query else {
            return Ok(());
        };
        let mut dims: Vec<usize> = Vec::new();
        for e in turns.iter().filter_map(|m| m.emb) {
            if e.dim() == q.len() {
                return Ok(());
            }
            if !dims.contains(&e.dim()) {
                dims.push(e.dim());
            }
        }
        if dims.is_empty() {
            return Ok(());
        }
        dims.sort_unstable();
        let have: Vec<String> = dims.iter().map(usize::to_string).collect();
        Err(format!(
            "EMB has dimension {} but the session's embeddings have {}",
            q.len(),
            have.join(" or ")
        ))
    }
}

/// `{"recent":[...],"relevant":[...]}` from every turn of a session (oldest first): the last
/// `recent` turns, and the `k` most relevant of the others with their scores. Refused when
/// the query cannot be compared with the session's embeddings ([`Scorer::check_dimension`]).
pub fn search_json(
    all: &[Turn],
    scorer: &Scorer,
    recent: usize,
    k: usize,
) -> Result<Vec<u8>, String> {
    scorer.check_dimension(all)?;
    let split = all.len().saturating_sub(recent);
    let (older, newest) = all.split_at(split);
    let mut out = b"{\"recent\":[".to_vec();
    for (i, m) in newest.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_message_scored(&mut out, m, None);
    }
    out.extend_from_slice(b"],\"relevant\":[");
    for (i, (score, m)) in scorer
        .top_k(older.iter().copied(), k)
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        push_json_message_scored(&mut out, &m, Some(score));
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::message::Message;

    fn m(seq: u64, content: &str, emb: Option<Vec<f32>>) -> Message {
        Message {
            seq,
            ts_ms: 0,
            role: "user".into(),
            content: content.as_bytes().to_vec(),
            meta: None,
            emb,
            ..Default::default()
        }
    }

    #[test]
    fn text_overlap_ranks_by_shared_words() {
        let turns = [
            m(1, "the cat sat", None),
            m(2, "dogs bark", None),
            m(3, "a Cat and a hat", None),
        ];
        let s = Scorer::new(Query::Text("cat hat".into()));
        let top = s.top_k(turns.iter().map(Message::as_turn), 5);
        assert_eq!(
            top.iter().map(|(_, t)| t.seq).collect::<Vec<_>>(),
            vec![3, 1]
        );
        assert_eq!(top[0].0, 1.0);
        assert_eq!(top[1].0, 0.5);
    }

    #[test]
    fn embeddings_rank_by_cosine_and_skip_other_dims() {
        let turns = [
            m(1, "a", Some(vec![1.0, 0.0])),
            m(2, "b", Some(vec![0.7, 0.7])),
            m(3, "c", Some(vec![1.0, 0.0, 0.0])),
            m(4, "d", None),
        ];
        let s = Scorer::new(Query::Emb(vec![1.0, 0.1]));
        let top = s.top_k(turns.iter().map(Message::as_turn), 1);
        assert_eq!(top[0].1.seq, 1);
        assert_eq!(s.top_k(turns.iter().map(Message::as_turn), 10).len(), 2);
    }

    #[test]
    fn an_emb_query_of_another_dimension_is_refused() {
        let turns = [
            m(1, "a", Some(vec![1.0, 0.0, 0.0, 0.0])),
            m(2, "b", None),
            m(3, "c", Some(vec![1.0, 0.0])),
        ];
        let refs: Vec<Turn> = turns.iter().map(Message::as_turn).collect();
        let q3 = Scorer::new(Query::Emb(vec![1.0, 0.0, 0.0]));
        assert_eq!(
            search_json(&refs, &q3, 0, 5).unwrap_err(),
            "EMB has dimension 3 but the session's embeddings have 2 or 4"
        );
        // One turn of the query's dimension is enough; turns without embeddings never refuse.
        let q2 = Scorer::new(Query::Emb(vec![0.0, 1.0]));
        assert!(search_json(&refs, &q2, 0, 5).is_ok());
        assert!(search_json(&refs[1..2], &q3, 0, 5).is_ok());
        assert!(search_json(&[], &q3, 0, 5).is_ok());
        let text = Scorer::new(Query::Text("a".into()));
        assert!(search_json(&refs, &text, 0, 5).is_ok());
    }

    #[test]
    fn json_has_recent_and_scored_relevant() {
        let turns = [
            m(1, "alpha beta", None),
            m(2, "gamma", None),
            m(3, "beta", None),
        ];
        let refs: Vec<Turn> = turns.iter().map(Message::as_turn).collect();
        let out = search_json(&refs, &Scorer::new(Query::Text("beta".into())), 1, 3).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["recent"][0]["seq"], 3);
        assert_eq!(v["relevant"].as_array().unwrap().len(), 1);
        assert_eq!(v["relevant"][0]["seq"], 1);
        assert_eq!(v["relevant"][0]["score"], 1.0);
    }
}
