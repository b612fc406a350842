//! Endpoints: create, update (traffic, mirror, tags), delete with their deployments, and
//! their credentials (keys, aml tokens).

use super::*;

impl Node {
    // ---- endpoints ----

    /// The endpoint, and the revision of its record (an update sends it back).
    pub fn endpoint_at(&self, name: &str) -> Result<(EndpointView, u64), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        Ok((views::endpoint(&at.record, self.scoring.as_ref()), at.revision))
    }

    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.desired()
            .endpoints
            .values()
            .map(|at| views::endpoint(&at.record, self.scoring.as_ref()))
            .collect()
    }

    pub async fn create_endpoint(&self, spec: EndpointSpec) -> Result<EndpointView, Error> {
        checked(spec.check())?;
        rules::create_endpoint(&self.desired(), &spec, self.tokens.aad.is_some())?;
        let key = state::endpoint_key(&spec.name);
        let record =
            EndpointRecord { spec, keys: Keys { primary: keys::new_key()?, secondary: keys::new_key()? } };
        self.commit(Txn::default().expect(&key, None).put(&key, &record)).await?;
        Ok(views::endpoint(&record, self.scoring.as_ref()))
    }

    /// Replaces the endpoint's spec (traffic, mirror, description, tags); its keys stay.
    /// `expected`: the revision the change was made to; refused if the record has moved.
    pub async fn update_endpoint(
        &self,
        spec: EndpointSpec,
        expected: Option<u64>,
    ) -> Result<EndpointView, Error> {
        checked(spec.check())?;
        let desired = self.desired();
        rules::update_endpoint(&desired, &spec)?;
        let at = endpoint_of(&desired, &spec.name)?;
        unmoved("endpoint", &spec.name, at.revision, expected)?;
        let key = state::endpoint_key(&spec.name);
        let record = EndpointRecord { spec, keys: at.record.keys.clone() };
        // The deployments its traffic names must still be there when this commits.
        let txn = desired
            .deployments_of(&record.spec.name)
            .fold(Txn::default().expect(&key, Some(at.revision)), |t, d| {
                t.expect(&state::deployment_key(&d.record.spec.id()), Some(d.revision))
            });
        self.commit(txn.put(&key, &record)).await?;
        Ok(views::endpoint(&record, self.scoring.as_ref()))
    }

    /// Deletes the endpoint and its deployments; with `wait`, returns once their containers
    /// are gone.
    pub async fn delete_endpoint(&self, name: &str, wait: bool) -> Result<(), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        let key = state::endpoint_key(name);
        let mut txn = Txn::default().expect(&key, Some(at.revision)).delete(&key);
        let mut ids = Vec::new();
        for deployment in desired.deployments_of(name) {
            let id = deployment.record.spec.id();
            txn = txn
                .expect(&state::deployment_key(&id), Some(deployment.revision))
                .delete(&state::deployment_key(&id))
                .delete_prefix(&state::outcomes_prefix(&id))
                .delete(&state::move_key(&id));
            ids.push(id);
        }
        self.commit(txn).await?;
        if wait {
            self.wait_released(&ids).await;
        }
        Ok(())
    }

    /// Key mode: both keys. aml_token mode: a fresh token. aad_token mode: where to get one.
    pub fn credentials(&self, name: &str) -> Result<Credentials, Error> {
        let desired = self.desired();
        let record = &endpoint_of(&desired, name)?.record;
        match record.spec.auth_mode {
            AuthMode::Key => Ok(Credentials::Keys {
                primary_key: record.keys.primary.clone(),
                secondary_key: record.keys.secondary.clone(),
            }),
            AuthMode::AmlToken => {
                let audience = aml::audience(&desired.workspace.name, name);
                let issued = self
                    .tokens
                    .aml
                    .issue(&audience, self.tokens.aml_ttl)
                    .map_err(|e| Error::other("issuing a token", e))?;
                Ok(Credentials::Token {
                    access_token: issued.token,
                    expiry_time_utc: issued.expires,
                    refresh_after_time_utc: issued.refresh_after,
                    token_type: "Bearer".into(),
                })
            }
            AuthMode::AadToken => Err(Error::Invalid(match &self.tokens.aad {
                Some(aad) => format!(
                    "endpoint {name} uses aad_token: get a token for audience {} from your identity provider {}",
                    aad.audience, aad.issuer
                ),
                None => format!("endpoint {name} uses aad_token, but auth.aad is not configured"),
            })),
        }
    }

    /// A new key (or the given one) replaces one of the two; the next request sees it.
    pub async fn regenerate_keys(
        &self,
        name: &str,
        key_type: KeyType,
        value: Option<String>,
    ) -> Result<(), Error> {
        let desired = self.desired();
        let at = endpoint_of(&desired, name)?;
        let new = match value {
            Some(v) => {
                keys::check_user_key(&v)?;
                v
            }
            None => keys::new_key()?,
        };
        if at.record.spec.auth_mode != AuthMode::Key {
            return Err(Error::Invalid(format!(
                "endpoint {name} uses tokens, not keys: there is no key to regenerate"
            )));
        }
        let mut record = at.record.clone();
        match key_type {
            KeyType::Primary => record.keys.primary = new,
            KeyType::Secondary => record.keys.secondary = new,
        }
        let key = state::endpoint_key(name);
        self.commit(Txn::default().expect(&key, Some(at.revision)).put(&key, &record)).await?;
        Ok(())
    }
}
