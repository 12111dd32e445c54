-- Argo CD action "promote": sets the annotation canary.dev/promote, which canary-operator decides and
-- then removes (docs/cli.md). The value is the JSON the canary CLI writes; its timestamp makes
-- every use a new command.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canary.dev/promote"] = '{"at": "' .. os.date("!%Y-%m-%dT%H:%M:%SZ") .. '", "by": "argocd", "reason": "promote from Argo CD"}'
return obj
