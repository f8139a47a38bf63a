//! The policies give the same pod in any order the API server may call them.

use super::*;

/// The mutating policies applied in `order`, each reinvoked after the others as the
/// API server does (until nothing changes); `None` when one rejects.
fn chain(
    h: &mut Harness,
    request: &Value,
    order: &[usize],
) -> Result<Option<Value>, TestCaseError> {
    let mut object = request["object"].clone();
    for _round in 0..4 {
        let mut changed = false;
        for &i in order {
            let current = with_object(request, &object);
            let r = h.eval_case(i, &current)?;
            if !r.allowed {
                return Ok(None);
            }
            if r.patch.is_some() {
                object = patched(&current, &r)?;
                changed = true;
            }
        }
        if !changed {
            return Ok(Some(object));
        }
    }
    Err(TestCaseError::fail(format!(
        "the policies in order {order:?} never settle"
    )))
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// Property 3: the four mutating policies reach the same pod in every order.
#[test]
fn the_policies_commute() {
    let h = RefCell::new(Harness::examples(FRESH_EVERY));
    let orders = permutations(POLICIES.len());
    check("commute", generate::pod_with(12, 4), |object, ns| {
        let request = create(object, ns, 7);
        let mut reached: Vec<(Vec<usize>, Value)> = Vec::new();
        for order in &orders {
            if let Some(out) = chain(&mut h.borrow_mut(), &request, order)? {
                api_rules(&out).map_err(|e| {
                    TestCaseError::fail(format!("order {order:?} broke an API rule: {e}"))
                })?;
                if let Some((first, seen)) = reached.first() {
                    prop_assert_eq!(
                        seen,
                        &out,
                        "order {:?} and order {:?} reach different pods",
                        first,
                        order
                    );
                }
                reached.push((order.clone(), out));
            }
        }
        Ok(())
    });
}
